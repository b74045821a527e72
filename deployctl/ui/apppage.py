"""One app: what each environment runs, its history with the commits between deploys, whether it may be
promoted (the promotion gate's verdict and why), and the exact promote and rollback commands.

The verdict is :func:`deployctl.reconcile.policy.gate_results` (the check ``reconcile`` itself
makes) asked about the SHA the required environment runs, plus the target environment's freeze.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from deployctl.app.history import CheckedRecord
from deployctl.edges.git import history as git_history
from deployctl.edges.git import repo as repo_edge
from deployctl.model.audit import AuditRecord
from deployctl.model.state import DesiredState
from deployctl.model.vocabulary import RAN
from deployctl.reconcile import policy
from deployctl.rules.freeze import frozen_environments
from deployctl.rules.promote import deploy_path
from deployctl.ui.data import Cell, Dashboard

MAX_COMMITS = 20


@dataclass(frozen=True)
class PromotionVerdict:
    """May ``app`` go from ``from_env`` to ``to_env``: yes, no or nothing to do, and why."""

    app: str
    from_env: str
    to_env: str
    sha: str | None
    verdict: str  # "promotable" | "blocked" | "up-to-date"
    reasons: tuple[str, ...]
    command: str

    def as_dict(self) -> dict[str, object]:
        return {"app": self.app, "from": self.from_env, "to": self.to_env, "sha": self.sha,
                "verdict": self.verdict, "reasons": list(self.reasons), "command": self.command}


@dataclass(frozen=True)
class HistoryEntry:
    record: AuditRecord
    commits: tuple[tuple[str, str, str], ...] | None  # (sha, author, first line), newest first
    truncated: bool = False
    unverified: str | None = None
    """Why the record's rows do not verify in the audit chain (None: they do); the page marks it."""

    def as_dict(self) -> dict[str, object]:
        doc = CheckedRecord(self.record, self.unverified).as_dict()
        doc["commits"] = None if self.commits is None else [
            {"sha": s, "author": a, "summary": m} for s, a, m in self.commits]
        doc["commits_truncated"] = self.truncated
        return doc


@dataclass(frozen=True)
class AppPage:
    app: str
    owner: str | None
    source: str | None
    cells: tuple[Cell, ...]
    promotions: tuple[PromotionVerdict, ...]
    rollbacks: tuple[tuple[str, str], ...]  # (env, command)
    history: tuple[HistoryEntry, ...]

    def as_dict(self) -> dict[str, object]:
        return {"app": self.app, "owner": self.owner, "source": self.source,
                "environments": [c.as_dict() for c in self.cells],
                "promotions": [p.as_dict() for p in self.promotions],
                "rollbacks": [{"env": e, "command": c} for e, c in self.rollbacks],
                "history": [h.as_dict() for h in self.history]}


def promotion_verdicts(dashboard: Dashboard, desired: DesiredState, app: str, now: datetime) -> list[PromotionVerdict]:
    """For each environment that ``requires`` others: may it get what the first required one runs?"""
    config = desired.config
    if config is None or app not in config.apps:
        return []
    frozen = frozen_environments(config, now)
    out = []
    for name in sorted(config.environments):
        env = config.environments[name]
        if not env.requires:
            continue
        source_env = env.requires[0]
        command = f"deployctl promote {app} --from {source_env} --to {name} --commit"
        source = desired.target(source_env, app)
        if source is None:
            out.append(PromotionVerdict(app, source_env, name, None, "blocked",
                                        (f"{source_env} has no valid deploy file for {app}",), command))
            continue
        current = desired.target(name, app)
        if current is not None and current.sha == source.sha:
            out.append(PromotionVerdict(app, source_env, name, source.sha, "up-to-date",
                                        (f"{name} already runs {source.sha[:12]}, as {source_env} does",), command))
            continue
        candidate = replace(current or source, env=name, sha=source.sha, path=deploy_path(name, app),
                            line=current.line if current else 1)
        # a promotion would be a later commit: what the shown commit holds counts as evidence
        gates = policy.gate_results(dashboard.repo.path, desired, base_ref=desired.commit or "HEAD",
                                    store=dashboard.store, targets=[candidate])
        reasons = [g.message() for g in gates]
        blocked = any(not g.passed for g in gates)
        if name in frozen:
            f = frozen[name]
            reasons.append(f"{name} is frozen until {f.end.strftime('%Y-%m-%d %H:%MZ')} ({f.window.reason})")
            blocked = True
        if env.forge_review:
            reasons.append(f"the pull request needs {env.min_approvals} approving review(s) on its final head "
                           f"from {', '.join(env.approvers)}")
        elif env.require_approval:
            reasons.append(f"the pull request needs approval from {', '.join(env.approvers)}")
        out.append(PromotionVerdict(app, source_env, name, source.sha, "blocked" if blocked else "promotable",
                                    tuple(reasons), command))
    return out


def rollback_commands(records: Sequence[AuditRecord], desired: DesiredState, app: str) -> list[tuple[str, str]]:
    """Per environment: the rollback to the newest SHA that ran there before the current one (``records``: those
    that verify in the audit chain)."""
    out = []
    for target in (t for t in desired.targets if t.app == app):
        earlier = next((r.attempt.new_sha for r in records if r.attempt.env == target.env
                        and r.result in RAN and r.attempt.new_sha != target.sha), None)
        to = f" --to {earlier[:12]}" if earlier else ""
        out.append((target.env, f"deployctl rollback {app} --env {target.env}{to} --commit"))
    return out


def _commits(dashboard: Dashboard, source: Path | None, record: AuditRecord) -> tuple[Any, bool]:
    old, new = record.attempt.previous_sha, record.attempt.new_sha
    if source is None or not old or old == new:
        return None, False
    key = (str(source), old, new)
    if key not in dashboard.commit_ranges:
        found = git_history.commit_range(source, old, new, limit=MAX_COMMITS)
        if len(dashboard.commit_ranges) > 2000:
            dashboard.commit_ranges.clear()
        dashboard.commit_ranges[key] = None if found is None else (
            tuple((c.sha, c.author_name, c.summary) for c in found[0]), found[2])
    cached = dashboard.commit_ranges[key]
    return (None, False) if cached is None else cached


def app_page(dashboard: Dashboard, app: str, *, limit: int = 100) -> AppPage | None:
    """Everything the app page shows, or None when the deploy repo does not know ``app``."""
    desired, snapshot = dashboard.current()
    cells = tuple(c for c in snapshot.cells if c.app == app)
    config = desired.config
    app_config = config.apps.get(app) if config else None
    if not cells and app_config is None:
        return None
    records = dashboard.records(app=app, limit=limit)
    source = None
    if app_config is not None and app_config.source:
        root = repo_edge.repo_root(repo_edge.open_repository(dashboard.repo.path))
        source = repo_edge.source_repo_path(root, app_config.source)
    checked = dashboard.checked(records)
    history = tuple(HistoryEntry(c.record, *_commits(dashboard, source, c.record), unverified=c.unverified)
                    for c in checked)  # fmt: skip
    verified = [c.record for c in checked if c.verified]
    return AppPage(
        app=app, owner=app_config.owner if app_config else None,
        source=app_config.source if app_config else None, cells=cells,
        promotions=tuple(promotion_verdicts(dashboard, desired, app, snapshot.taken_at)),
        rollbacks=tuple(rollback_commands(verified, desired, app)), history=history,
    )
