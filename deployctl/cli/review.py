"""`deployctl diff`, `promote`, `rollback` and `codeowners`: the pull-request side of deploying."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from deployctl.app import diff as df
from deployctl.cli.output import echo_json, output_option, render_table, repo_option
from deployctl.edges.git import repo as repo_edge
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.printable import printable
from deployctl.reconcile import policy
from deployctl.rules import codeowners as co
from deployctl.rules.promote import (
    PromoteError,
    Promotion,
    choose_rollback,
    deploy_path,
    note_line,
    plan_promotions,
    prepend,
)


class CodeownersOutOfDateError(DeployctlError):
    """The CODEOWNERS file does not match the approvers in deployctl.yaml."""


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


# -- diff -------------------------------------------------------------------------------------------


def _approval(t: df.TargetDiff) -> str:
    return ", ".join(t.approvers) if t.needs_approval and t.approvers else ("required" if t.needs_approval else "-")


def _gates(t: df.TargetDiff) -> str:
    if not t.gates:
        return "-"
    failed = [g.required for g in t.gates if not g.passed]
    if failed:
        return "FAILED: " + ", ".join(failed)
    return "ok: " + ", ".join(g.required for g in t.gates)


def render_diff_text(d: df.StateDiff) -> list[str]:
    """A table of changed targets, then per target its image, commits and warnings, then problems."""
    lines: list[str] = []
    if d.targets:
        rows = [(t.env, t.app, t.status, _short(t.old_sha), _short(t.new_sha), _approval(t), _gates(t))
                for t in d.targets]
        lines += render_table(("ENV", "APP", "CHANGE", "OLD", "NEW", "APPROVAL", "GATES"), rows).splitlines()
    for t in d.targets:
        lines.append("")
        lines.append(f"{t.env}/{t.app} ({t.path}:{t.line})")
        if t.new_image:
            lines.append(f"  image: {t.new_image}")
        if t.commits is not None:
            more = "+" if t.commits.truncated else ""
            lines.append(f"  commits {_short(t.old_sha)}..{_short(t.new_sha)} ({len(t.commits.commits)}{more}):")
            lines += [f"    {c.sha[:12]} {c.author}: {c.summary}" for c in t.commits.commits]
        lines += [f"  warning: {w}" for w in t.warnings]
    problems = [p for p in d.problems if p.is_error]
    warnings = [p for p in d.problems if not p.is_error and p.path.startswith("environments/")
                and (p.env, p.app) in {t.key for t in d.targets}]
    if problems or warnings:
        lines.append("")
        lines += [f"error: {p}" for p in problems]
        lines += [f"warning: {p}" for p in warnings]
    n = len(d.targets)
    head = f"{n} change{'s' * (n != 1)} from {d.base_ref} ({_short(d.base_commit)}) to {d.head_ref} " \
           f"({_short(d.head_commit)})"
    if problems:
        lines.append(f"{head}: {len(problems)} error{'s' * (len(problems) != 1)}; fix before merging")
    else:
        lines.append(f"{head}: ok")
    return [printable(line) for line in lines]


def _md(text: str) -> str:
    """Text safe inside a markdown table cell, list item or code span: no HTML, no table break, no
    control characters, no backtick to end a code span."""
    return printable(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
                     .replace("\n", " ")).replace("`", "\\x60")


def render_diff_markdown(d: df.StateDiff) -> list[str]:
    """A PR comment: a compact table first, errors next, the details of each target folded."""
    lines = [f"### deployctl diff: `{_md(d.base_ref)}` → `{_md(d.head_ref)}`", ""]
    if not d.targets:
        lines.append("No deploy changes.")
    else:
        lines += ["| Env | App | Change | From | To | Approval | Gates |", "|---|---|---|---|---|---|---|"]
        for t in d.targets:
            gates = _gates(t)
            mark = "❌ " if gates.startswith("FAILED") else ("✅ " if gates.startswith("ok") else "")
            lines.append(
                f"| {t.env} | {t.app} | {t.status} | `{_short(t.old_sha)}` | `{_short(t.new_sha)}` | "
                f"{_md(_approval(t))} | {mark}{_md(gates)} |"
            )
    problems = [p for p in d.problems if p.is_error]
    if problems:
        lines += ["", f"**{len(problems)} error{'s' * (len(problems) != 1)}**: fix before merging", ""]
        lines += [f"- `{_md(p.path)}{'' if p.line is None else f':{p.line}'}`: {_md(p.message)}" for p in problems]
    for t in d.targets:
        count = f", {len(t.commits.commits)}{'+' if t.commits.truncated else ''} commits" if t.commits else ""
        warn = " ⚠️" if t.warnings else ""
        lines += ["", f"<details><summary>{t.env}/{t.app}: {_short(t.old_sha)} → {_short(t.new_sha)}"
                      f"{count}{warn}</summary>", ""]
        lines.append(f"- deploy file: `{_md(t.path)}:{t.line}`")
        if t.new_image:
            lines.append(f"- image: `{_md(t.new_image)}`")
        lines += [f"- ⚠️ {_md(w)}" for w in t.warnings]
        if t.commits is not None:
            lines += [f"- `{c.sha[:12]}` {_md(c.summary)} ({_md(c.author)})" for c in t.commits.commits]
        lines += ["", "</details>"]
    return lines


def build_diff(repo: str, base: str, head: str, *, audit_url: str | None = None, check_images: bool = False,
               strict: bool = False) -> df.StateDiff:
    """The diff between two refs of the deploy repo, with gate results and app commit ranges
    (and, with ``check_images``, a problem for every changed target whose image is missing)."""
    base_state = repo_edge.read_desired_state(repo, ref=base)
    head_state = repo_edge.read_desired_state(repo, ref=head)
    d = df.diff_states(base_state, head_state)
    keys = {t.key for t in d.targets}
    changed = [t for t in head_state.targets if t.key in keys]
    store = None
    if audit_url:
        from deployctl.edges.audit.url import open_store

        store = open_store(audit_url, create=False)
    try:
        gates = policy.gate_results(repo, head_state, base_ref=base_state.commit, store=store, targets=changed)
    finally:
        if store is not None:
            store.close()
    root = repo_edge.repo_root(repo_edge.open_repository(repo))
    result = df.with_details(d, gates=gates, commits=df.commit_ranges(root, d, head_state.config))
    if check_images and changed:
        from dataclasses import replace

        from deployctl.edges.registry.client import RegistryClient
        from deployctl.reconcile.artifacts import image_problems

        with RegistryClient() as client:
            resolutions = client.resolve_many(sorted({t.image for t in changed}))
        result = replace(result, problems=(*result.problems, *image_problems(changed, resolutions, strict=strict)))
    return result


@click.command()
@repo_option
@click.option("--base", required=True, help="The ref the pull request merges into (e.g. origin/main).")
@click.option("--head", default="HEAD", show_default=True, help="The pull request's ref.")
@click.option("--audit", "audit_url", default=None, envvar="DEPLOYCTL_AUDIT",
              help="Check promotion gates against this audit store [default: the deploy files' git history].")
@click.option("--check-images", is_flag=True,
              help="Check that every changed target's image exists in its registry (one request per image).")
@click.option("--strict", is_flag=True, help="With --check-images: an unreachable registry is an error.")
@output_option("text", "json", "markdown")
def diff(repo: str, base: str, head: str, audit_url: str | None, check_images: bool, strict: bool,
         output: str) -> None:
    """Show what a change to the deploy repo deploys, without a cluster.

    Per env/app: old and new SHA, image, who must approve, promotion gate results and, when
    the app's source repo is on this disk, the commits in between (with a warning when the new
    SHA does not descend from the old one). Exits 1 when the head has errors or a gate fails.
    --output markdown is a ready pull-request comment.

    \b
    Example:
      deployctl diff --base origin/main --head HEAD -o markdown > comment.md
      deployctl diff --base origin/main --check-images
    """
    result = build_diff(repo, base, head, audit_url=audit_url, check_images=check_images, strict=strict)
    if output == "json":
        echo_json(result.as_dict())
    else:
        render = render_diff_markdown if output == "markdown" else render_diff_text
        for line in render(result):
            click.echo(line)
    if not result.ok:
        click.get_current_context().exit(1)


# -- promote and rollback ---------------------------------------------------------------------------


def _workdir(repo: str) -> Path:
    repository = repo_edge.open_repository(repo)
    if repository.is_bare or not repository.workdir:
        raise PromoteError(f"{repo}: a bare repo has no work tree; run this in a clone")
    return Path(repository.workdir)


def _read(root: Path, path: str) -> bytes | None:
    try:
        return (root / path).read_bytes()
    except FileNotFoundError:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def _write(repo: str, files: dict[str, bytes], *, commit: bool, message: str) -> str | None:
    repo_edge.write_worktree_files(repo, files)
    if not commit:
        return None
    return repo_edge.commit_files(repo, files, message=message)


def promote_apps(
    repo: str, apps: Sequence[str] | None, *, from_env: str, to_env: str, message: str | None = None,
    commit: bool = False, now: datetime | None = None,
) -> tuple[list[Promotion], str | None]:
    """Promote (write, and with ``commit`` commit) ``apps`` (None: all that differ). Returns what changed."""
    root = _workdir(repo)
    state = repo_edge.read_desired_state(repo, worktree=True)
    promotions = plan_promotions(state, state, from_env=from_env, to_env=to_env, apps=apps)
    if not promotions:
        return [], None
    name, email = repo_edge.identity(repo)
    when = now or _now()
    files: dict[str, bytes] = {}
    for p in promotions:
        note = note_line(f"promoted from {from_env}", who=f"{name} <{email}>", when=when, message=message)
        files[p.path] = prepend(_read(root, p.path), p.new_sha, note)
    if len(promotions) == 1:
        p = promotions[0]
        subject = f"Promote {p.app} from {from_env} to {to_env} ({p.new_sha[:12]})"
    else:
        subject = f"Promote {len(promotions)} apps from {from_env} to {to_env}"
    body = "\n".join(f"- {p.app}: {_short(p.old_sha)} -> {p.new_sha[:12]}" for p in promotions)
    text = f"{subject}\n\n{body}\n" + (f"\n{message}\n" if message else "")
    return promotions, _write(repo, files, commit=commit, message=text)


@click.command()
@click.argument("app", required=False)
@click.option("--from", "from_env", required=True, metavar="ENV", help="Environment whose SHA is promoted.")
@click.option("--to", "to_env", required=True, metavar="ENV", help="Environment whose deploy file is written.")
@repo_option
@click.option("--message", "-m", default=None, help="Added to the note line and the commit message.")
@click.option("--commit", is_flag=True, help="Commit the change on the current branch.")
@click.option("--all", "all_apps", is_flag=True, help="Promote every app whose SHA differs.")
def promote(app: str | None, from_env: str, to_env: str, repo: str, message: str | None, commit: bool,
            all_apps: bool) -> None:
    """Write the SHA APP runs in --from at the top of its deploy file in --to.

    A note line (who, when, from where) goes under it and the file's history stays below. The
    work tree is changed; --commit also commits it on the current branch.

    \b
    Example:
      deployctl promote web --from staging --to production --commit -m "Checkout fix"
      deployctl promote --all --from staging --to production
    """
    if all_apps == (app is not None):
        raise click.UsageError("give an APP or --all (not both)")
    done, sha = promote_apps(repo, None if all_apps else [app or ""], from_env=from_env, to_env=to_env,
                             message=message, commit=commit)
    if not done:
        click.echo(f"nothing to promote: every app in {to_env} already runs what {from_env} runs")
        return
    for p in done:
        click.echo(f"promoted {p.app} to {p.env}: {_short(p.old_sha)} -> {p.new_sha[:12]} ({p.path})")
    if sha is not None:
        click.echo(f"committed {sha[:12]}")


def rollback_app(
    repo: str, app: str, *, env: str, to: str | None = None, steps: int | None = None, force: bool = False,
    message: str | None = None, commit: bool = False, now: datetime | None = None,
) -> tuple[Promotion, str | None]:
    """Deploy an earlier SHA by prepending it to the deploy file (never rewriting history)."""
    root = _workdir(repo)
    path = deploy_path(env, app)
    data = _read(root, path)
    if data is None:
        raise PromoteError(f"{path}: no such deploy file in the work tree")
    history: list[str] = []
    repository = repo_edge.open_repository(repo)
    if not repository.head_is_unborn:
        history = repo_edge.deployed_shas(repo, [path], ref="HEAD")[path]
    chosen = choose_rollback(data, path=path, to=to, steps=steps, git_history=history, force=force)
    current = data.split(None, 1)[0].decode()
    name, email = repo_edge.identity(repo)
    note = note_line(f"rollback from {current[:12]}", who=f"{name} <{email}>", when=now or _now(),
                     message=message)
    files = {path: prepend(data, chosen, note)}
    text = f"Roll back {app} in {env} to {chosen[:12]} (from {current[:12]})\n" + (
        f"\n{message}\n" if message else "")
    return Promotion(env, app, path, current, chosen), _write(repo, files, commit=commit, message=text)


@click.command()
@click.argument("app")
@click.option("--env", required=True, help="The environment to roll back.")
@click.option("--to", "to_sha", default=None, metavar="SHA", help="The earlier SHA (full or a unique prefix).")
@click.option("--steps", type=int, default=None, help="Go back N distinct SHAs in the file's history [default: 1].")
@click.option("--force", is_flag=True, help="Allow a SHA that never ran in this environment.")
@repo_option
@click.option("--message", "-m", default=None, help="Why; added to the note line and the commit message.")
@click.option("--commit", is_flag=True, help="Commit the change on the current branch.")
def rollback(app: str, env: str, to_sha: str | None, steps: int | None, force: bool, repo: str,
             message: str | None, commit: bool) -> None:
    """Roll APP in --env forward to an earlier SHA.

    The earlier SHA is prepended with a note, like any deploy; history is never rewritten. A SHA
    that never ran in the environment (not in the file's history nor its git history) is refused
    unless --force.

    \b
    Example:
      deployctl rollback web --env production --commit -m "500s on checkout"
      deployctl rollback web --env production --to dc4f7d806af0
    """
    if to_sha is not None and steps is not None:
        raise click.UsageError("give either --to or --steps, not both")
    done, sha = rollback_app(repo, app, env=env, to=to_sha, steps=steps, force=force, message=message,
                             commit=commit)
    click.echo(f"rolled back {app} in {env}: {_short(done.old_sha)} -> {done.new_sha[:12]} ({done.path})")
    if sha is not None:
        click.echo(f"committed {sha[:12]}")


# -- codeowners -------------------------------------------------------------------------------------


def _codeowners_file(root: Path, fmt: str, given: str | None) -> Path:
    if given:
        return root / given
    for candidate in co.CANDIDATE_PATHS[fmt]:
        if (root / candidate).exists():
            return root / candidate
    return root / co.DEFAULT_PATHS[fmt]


@click.command()
@repo_option
@click.option("--check", "mode", flag_value="check", help="Exit 1 when CODEOWNERS is out of date.")
@click.option("--write", "mode", flag_value="write", help="Write the entries into CODEOWNERS.")
@click.option("--format", "fmt", type=click.Choice(list(co.FORMATS)), default=co.GITHUB, show_default=True,
              help="GitHub or GitLab CODEOWNERS syntax.")
@click.option("--file", "file_", default=None,
              help="CODEOWNERS path in the repo [default: the existing one, else .github/ or .gitlab/CODEOWNERS].")
def codeowners(repo: str, mode: str | None, fmt: str, file_: str | None) -> None:
    """Generate CODEOWNERS entries from each environment's approvers in deployctl.yaml.

    Changes to environments/<env>/ (and to deployctl.yaml) then need a review from those
    approvers. Without options the entries are printed; --write puts them between marker
    comments in the file (the rest is kept); --check fails CI when the file is stale.

    \b
    Example:
      deployctl codeowners --write
      deployctl codeowners --check --format gitlab
    """
    root = _workdir(repo)
    state = repo_edge.read_desired_state(repo, worktree=True)
    if state.config is None:
        raise InvalidInputError("deployctl.yaml is missing or invalid; run deployctl validate --worktree")
    block = co.render_block(state.config, fmt)
    if mode is None:
        click.echo(block, nl=False)
        return
    path = _codeowners_file(root, fmt, file_)
    rel = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8") if path.exists() else None
    if mode == "check":
        if not co.is_current(text, state.config, fmt):
            why = "does not exist" if text is None else "is out of date with deployctl.yaml"
            raise CodeownersOutOfDateError(f"{rel} {why}; run deployctl codeowners --write and commit it")
        click.echo(f"ok: {rel} matches deployctl.yaml")
        return
    new = co.replace_block(text or "", block)
    if new == text:
        click.echo(f"{rel} is up to date")
        return
    repo_edge.write_worktree_files(repo, {rel: new.encode()})
    n = len(co.entries(state.config))
    click.echo(f"wrote {rel} ({n} entr{'ies' if n != 1 else 'y'})")
