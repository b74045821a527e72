"""The diff of a pull request: two refs of the deploy repo read, gates checked, app commit ranges found
(the I/O around the pure :mod:`deployctl.rules.diff`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from deployctl.edges.forge import ForgeSettings, open_forge
from deployctl.edges.git import history
from deployctl.edges.git import repo as repo_edge
from deployctl.model.audit_target import AUDIT_OFF, AuditTarget
from deployctl.model.config import Config
from deployctl.reconcile import policy
from deployctl.rules import diff as df
from deployctl.rules.diff import CommitLine, CommitRange, StateDiff


def build_diff(repo: str, base: str, head: str, *, audit: AuditTarget = AUDIT_OFF, check_images: bool = False,
               strict: bool = False) -> df.StateDiff:
    """The diff between two refs of the deploy repo, with gate results and app commit ranges
    (and, with ``check_images``, a problem for every changed target whose image is missing)."""
    base_state = repo_edge.read_desired_state(repo, ref=base)
    head_state = repo_edge.read_desired_state(repo, ref=head)
    d = df.diff_states(base_state, head_state)
    keys = {t.key for t in d.targets}
    changed = [t for t in head_state.targets if t.key in keys]
    from deployctl.edges.audit.url import open_target

    store = open_target(audit, create=False)
    try:
        gates = policy.gate_results(repo, head_state, base_ref=base_state.commit, store=store, targets=changed)
    finally:
        if store is not None:
            store.close()
    root = repo_edge.repo_root(repo_edge.open_repository(repo))
    result = df.with_details(d, gates=gates, commits=commit_ranges(root, d, head_state.config))
    if check_images and changed:
        from deployctl.edges.registry.client import RegistryClient
        from deployctl.reconcile.artifacts import image_problems

        with RegistryClient() as client:
            resolutions = client.resolve_many(sorted({t.image for t in changed}))
        result = replace(result, problems=(*result.problems, *image_problems(changed, resolutions, strict=strict)))
    return result



def commit_ranges(
    repo_root: Path, diff: StateDiff, config: Config | None, *, limit: int = 50
) -> dict[tuple[str, str], CommitRange]:
    """The app commits between old and new SHA of each changed target whose ``source`` repo is on this disk."""
    if config is None:
        return {}
    out: dict[tuple[str, str], CommitRange] = {}
    for t in diff.targets:
        app = config.apps.get(t.app)
        if app is None or not app.source or not t.old_sha or not t.new_sha or t.old_sha == t.new_sha:
            continue
        source = repo_edge.source_repo_path(repo_root, app.source)
        if source is None:
            continue
        found = history.commit_range(source, t.old_sha, t.new_sha, limit=limit)
        if found is None:
            continue
        infos, descendant, truncated = found
        lines = tuple(CommitLine(c.sha, c.author_name, c.summary) for c in infos)
        out[t.key] = CommitRange(lines, descendant, truncated)
    return out


PLAN_CONTEXT = "deployctl/plan"
COMMENT_MARKER = "<!-- deployctl-diff -->"


def publish_diff(result: StateDiff, markdown: str, *, number: int, forge: ForgeSettings) -> str:
    """Post (or update) the diff as one comment on pull request ``number`` and set the commit status
    ``deployctl/plan`` of its head: success, or failure when validation or a promotion gate fails.
    Returns the comment's URL."""
    client = open_forge(forge)
    try:
        where = client.comment(number, f"{COMMENT_MARKER}\n{markdown}", marker=COMMENT_MARKER)
        if result.head_commit:
            n = len(result.targets)
            description = (f"{n} deploy change{'s' * (n != 1)}; valid, gates pass" if result.ok
                           else "validation or a promotion gate failed; see the comment")
            client.set_status(result.head_commit, ok=result.ok, context=PLAN_CONTEXT, description=description)
        return where
    finally:
        client.close()
