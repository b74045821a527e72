"""The dashboard's matrix: every env x app with desired and live SHA, state, last deploy, freeze, approval.

One snapshot is built from the deploy repo, the cluster (reconcile's observe step, through
:func:`deployctl.app.status.observed_plan`) and the audit store, and kept for a few seconds, so
any number of open pages polling it cost one LIST per namespace and kind per refresh. The JSON
rows carry the fields of ``deployctl status -o json`` (:func:`deployctl.app.status.status_row`)
plus the dashboard's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from deployctl.app.history import CheckedRecord, check_records
from deployctl.app.status import observed_plan, status_row
from deployctl.edges.git.mirror import Mirror
from deployctl.edges.git.repo import read_desired_state
from deployctl.errors import DeployctlError
from deployctl.model.audit import STARTED, AttemptEvent, AuditRecord, AuditStore
from deployctl.model.config import Config
from deployctl.model.metric import Overlay
from deployctl.model.state import DesiredState, Target
from deployctl.model.verification import Verification
from deployctl.model.vocabulary import CellState, Result
from deployctl.model.workload import ANN_DIGEST, ANN_IMAGE, Health
from deployctl.reconcile.ordering import git_relation
from deployctl.reconcile.ports import Clusters
from deployctl.rules.freeze import frozen_environments
from deployctl.rules.plan import Action, Change, dependency_order

log = structlog.get_logger(__name__)

STATES = {str(state): state.label for state in CellState}
"""Each state a cell can be in, and how the page names it."""


class RepoView:
    """Where the dashboard reads the desired state: a local repo at a ref, or a mirror of a remote branch."""

    def __init__(self, path: str | Path, *, ref: str = "HEAD", mirror: Mirror | None = None,
                 fetch_every: float | None = 30.0) -> None:
        self.path = path
        self.ref = ref
        self.mirror = mirror
        self.fetch_every = fetch_every  # None: never fetch (the controller keeps the mirror fresh)
        self._fetched_at: float | None = None

    def read(self) -> DesiredState:
        if self.mirror is None:
            return read_desired_state(self.path, ref=self.ref)
        now = time.monotonic()
        if self.fetch_every is not None and (self._fetched_at is None or now - self._fetched_at >= self.fetch_every):
            self._fetched_at = now
            try:
                self.mirror.fetch()
            except DeployctlError as exc:  # keep showing what the mirror has
                log.warning("ui.fetch_failed", error=str(exc))
        head = self.mirror.head()
        if head is None:
            raise DeployctlError(f"the mirror of {self.mirror.source.display} has not been fetched yet")
        return read_desired_state(self.path, ref=head)


@dataclass(frozen=True)
class LastDeploy:
    """The newest audit record of one env/app."""

    id: int
    result: str
    sha: str
    started_at: datetime
    by: str
    trigger: str
    duration_seconds: float | None
    error: str | None
    unverified: str | None = None
    """Why the record's rows do not verify in the audit chain (None: they do)."""

    @classmethod
    def of(cls, checked: CheckedRecord) -> LastDeploy:
        record, a = checked.record, checked.record.attempt
        return cls(record.id, record.result, a.new_sha, a.started_at.astimezone(UTC), a.actor.user, a.trigger,
                   record.duration_seconds, record.error, checked.unverified)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "result": self.result, "sha": self.sha,
                "started_at": self.started_at.isoformat().replace("+00:00", "Z"), "by": self.by,
                "trigger": self.trigger, "duration_seconds": self.duration_seconds, "error": self.error,
                "chain_verified": self.unverified is None, "chain_unverified_reason": self.unverified}


@dataclass(frozen=True)
class Cell:
    """One env/app of the matrix."""

    row: Mapping[str, object]  # deployctl status -o json
    state: CellState
    reason: str
    owner: str | None = None
    desired_url: str | None = None
    digest: str | None = None
    last: LastDeploy | None = None
    freeze: str | None = None
    approval: str | None = None
    verification: Verification | None = None  # the live SHA's latest verification there

    @property
    def shows_reason(self) -> bool:
        """The page explains every state but in sync."""
        return self.state is not CellState.IN_SYNC and bool(self.reason)

    @property
    def env(self) -> str:
        return str(self.row["env"])

    @property
    def app(self) -> str:
        return str(self.row["app"])

    def as_dict(self) -> dict[str, object]:
        return {**self.row, "state": str(self.state), "state_reason": self.reason, "owner": self.owner,
                "desired_url": self.desired_url, "digest": self.digest,
                "last_deploy": self.last.as_dict() if self.last else None, "freeze": self.freeze,
                "approval": self.approval,
                "verification": self.verification.result if self.verification else None,  # as status -o json
                "verification_reason": self.verification.reason if self.verification else None,
                **verification_chain_fields(self.verification)}


def verification_chain_fields(verification: Verification | None) -> dict[str, object]:
    """Whether a verification's row verifies in the audit chain, and why not (None, None: no verification)."""
    if verification is None:
        return {"verification_chain_verified": None, "verification_chain_unverified_reason": None}
    return {"verification_chain_verified": verification.chain_unverified is None,
            "verification_chain_unverified_reason": verification.chain_unverified}


@dataclass(frozen=True)
class Snapshot:
    """The whole matrix at one moment."""

    taken_at: datetime
    deploy_commit: str | None
    ref: str
    cells: tuple[Cell, ...]
    envs: tuple[str, ...]
    apps: tuple[str, ...]
    owners: tuple[str, ...]
    problems: tuple[str, ...] = ()
    cluster_error: str | None = None
    filters: Mapping[str, str] = field(default_factory=dict)

    def select(self, *, env: str = "", app: str = "", owner: str = "") -> Snapshot:
        cells = tuple(c for c in self.cells if (not env or c.env == env) and (not app or c.app == app)
                      and (not owner or c.owner == owner))
        chosen = {k: v for k, v in (("env", env), ("app", app), ("owner", owner)) if v}
        return replace(self, cells=cells, filters=chosen)

    def cell(self, env: str, app: str) -> Cell | None:
        return next((c for c in self.cells if c.env == env and c.app == app), None)

    def grid(self) -> list[tuple[str, list[Cell | None]]]:
        """Rows of the matrix: one per app (that has a cell), one column per environment in :attr:`columns`."""
        apps = sorted({c.app for c in self.cells})
        return [(a, [self.cell(e, a) for e in self.columns]) for a in apps]

    @property
    def columns(self) -> tuple[str, ...]:
        present = {c.env for c in self.cells}
        return tuple(e for e in self.envs if e in present)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cells:
            out[str(c.state)] = out.get(str(c.state), 0) + 1
        return out

    def as_dict(self) -> dict[str, object]:
        return {"deploy_commit": self.deploy_commit, "ref": self.ref,
                "taken_at": self.taken_at.isoformat().replace("+00:00", "Z"),
                "apps": [c.as_dict() for c in self.cells], "problems": list(self.problems),
                "cluster_error": self.cluster_error, "filters": dict(self.filters), "counts": self.counts()}


def cell_state(change: Change, last: LastDeploy | None) -> tuple[CellState, str]:
    """The state the page shows for one env/app, and why. Pure. A last deploy whose rows do not verify in
    the audit chain says nothing about the state (the cell still lists it, marked)."""
    health = change.health
    if last is not None and last.unverified is not None:
        last = None
    if change.action is Action.INVALID:
        return CellState.INVALID, change.reason
    if change.action is Action.MISSING:
        return CellState.MISSING, change.reason
    if health is not None and health.health is Health.FAILED:
        return CellState.FAILED, health.message
    recent_failure = last is not None and last.result == Result.FAILED and last.sha == change.new_sha
    healthy_now = change.action is Action.IN_SYNC and health is not None and health.health is Health.HEALTHY
    if recent_failure and not healthy_now:
        assert last is not None
        return CellState.FAILED, last.error or "the last deploy of this SHA failed"
    if change.action is Action.DRIFT:
        return CellState.DRIFTED, change.reason
    if change.action is Action.BLOCKED:
        return CellState.BLOCKED, change.reason
    if change.action is Action.UPDATE:
        if last is not None and last.result == STARTED and last.sha == change.new_sha:
            return CellState.PROGRESSING, "being applied"
        if change.reason:  # reconcile's ordering verdict: it would skip or refuse this update
            return CellState.PENDING, change.reason
        live = change.old_sha[:12] if change.old_sha else "an image deployctl did not apply"
        return CellState.PENDING, f"live runs {live}; waiting for reconcile to apply {(change.new_sha or '')[:12]}"
    if health is not None and health.health is Health.PROGRESSING:
        return CellState.PROGRESSING, health.message
    return CellState.IN_SYNC, health.message if health else ""


def live_digest(change: Change) -> str | None:
    """The image digest the workloads run: from a digest-pinned image, else the annotation deployctl wrote."""
    digests = set()
    for image in change.live_images:
        if "@" in image:
            digests.add(image.split("@", 1)[1])
    if not digests:  # a tag-pinned image: the digest deployctl recorded, while that image still runs
        digests = {w.annotations[ANN_DIGEST] for w in change.workloads if w.annotations.get(ANN_DIGEST)
                   and w.annotations.get(ANN_IMAGE) in w.images.values()}
    return next(iter(digests)) if len(digests) == 1 else None


def env_notes(config: Config | None, now: datetime) -> dict[str, tuple[str | None, str | None]]:
    """env -> (freeze text, approval text)."""
    if config is None:
        return {}
    frozen = frozen_environments(config, now)
    out: dict[str, tuple[str | None, str | None]] = {}
    for name, env in config.environments.items():
        f = frozen.get(name)
        freeze = f"frozen until {f.end.strftime('%Y-%m-%d %H:%MZ')}: {f.window.reason}" if f else None
        approval = None
        if env.forge_review:
            approval = (f"{env.min_approvals} approving pull-request review(s) required from "
                        + ", ".join(env.approvers))
        elif env.require_approval:
            approval = "approval required from " + ", ".join(env.approvers)
        elif env.approvers:
            approval = "reviewed by " + ", ".join(env.approvers)
        out[name] = (freeze, approval)
    return out


def _offline_change(target: Target) -> Change:
    return Change(env=target.env, app=target.app, action=Action.MISSING, namespace=target.namespace,
                  target=target, reason="")


def build_snapshot(desired: DesiredState, plan_changes: Sequence[Change] | None, *, refused: Mapping[str, str],
                   last: Mapping[tuple[str, str], LastDeploy], now: datetime,
                   cluster_error: str | None = None,
                   verified: Mapping[tuple[str, str], Verification] | None = None) -> Snapshot:
    """The matrix from a plan (None when the cluster could not be read); ``verified``: each env/app's live
    SHA's latest verification. Pure."""
    config = desired.config
    notes = env_notes(config, now)
    changes = list(plan_changes) if plan_changes is not None else [_offline_change(t) for t in desired.targets]
    cells = []
    for change in changes:
        app_config = config.apps.get(change.app) if config else None
        previous = last.get(change.key)
        if change.env in refused:
            state, reason = CellState.REFUSED, refused[change.env]
        elif plan_changes is None:
            state, reason = CellState.UNKNOWN, f"live state unknown: {cluster_error}"
        else:
            state, reason = cell_state(change, previous)
        row = status_row(change)
        if plan_changes is None or change.env in refused:
            row = {**row, "live_sha": None, "in_sync": False, "action": "unknown", "health": "-", "message": reason}
        sha = change.new_sha
        freeze, approval = notes.get(change.env, (None, None))
        verification = (verified or {}).get(change.key)
        if verification is not None and verification.sha != row.get("live_sha"):
            verification = None
        cells.append(Cell(
            row=row, state=state, reason=reason, owner=app_config.owner if app_config else None,
            desired_url=app_config.commit_link(sha) if app_config and sha else None,
            digest=live_digest(change) if plan_changes is not None else None, last=previous,
            freeze=freeze, approval=approval, verification=verification,
        ))
    if config is not None:  # in promotion order: an environment after those it requires
        envs = tuple(dependency_order({n: e.requires for n, e in config.environments.items()}))
    else:
        envs = tuple(sorted({c.env for c in cells}))
    return Snapshot(
        taken_at=now, deploy_commit=desired.commit, ref=desired.ref, cells=tuple(cells), envs=envs,
        apps=tuple(sorted({c.app for c in cells})), owners=tuple(sorted({c.owner for c in cells if c.owner})),
        problems=tuple(str(p) for p in desired.errors), cluster_error=cluster_error,
    )


@dataclass(frozen=True)
class OverlaySource:
    """The product metric the timeline page offers above the deploys: ``deployctl timeline --overlay``'s
    ``prometheus=URL`` with its ``query``, or ``csv=FILE``. Set by the operator, never by a request."""

    spec: str
    query: str | None = None


class Dashboard:
    """The data behind every page, shared by ``deployctl ui`` and ``deployctl watch``. Thread-safe."""

    def __init__(self, repo: RepoView, *, store: AuditStore | None, clusters: Clusters | None,
                 allowed_namespaces: Sequence[str] = (), ttl: float = 2.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 overlay: OverlaySource | None = None) -> None:
        self.repo = repo
        self.overlay = overlay
        self.store = store
        self.clusters = clusters
        self.allowed_namespaces = tuple(allowed_namespaces)
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, DesiredState, Snapshot] | None = None
        self.commit_ranges: dict[tuple[str, str, str], Any] = {}  # filled by the app page

    def current(self) -> tuple[DesiredState, Snapshot]:
        """The desired state and the matrix, at most ``ttl`` seconds old."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1], self._cached[2]
            desired = self.repo.read()
            snapshot = self._observe(desired)
            self._cached = (time.monotonic(), desired, snapshot)
            return desired, snapshot

    def _observe(self, desired: DesiredState) -> Snapshot:
        last = self.last_deploys(desired.targets)
        now = self.clock()
        if self.clusters is None:
            return build_snapshot(desired, None, refused={}, last=last, now=now,
                                  cluster_error="no cluster configured (--no-cluster)")
        try:
            plan, refused = observed_plan(desired, self.clusters, relation=git_relation(self.repo.path),
                                            allowed_namespaces=self.allowed_namespaces)
        except DeployctlError as exc:
            log.warning("ui.observe_failed", error=str(exc))
            return build_snapshot(desired, None, refused={}, last=last, now=now, cluster_error=str(exc))
        return build_snapshot(desired, plan.changes, refused=refused, last=last, now=now,
                              verified=self.live_verifications(plan.changes))

    def live_verifications(self, changes: Sequence[Change]) -> dict[tuple[str, str], Verification]:
        """Each env/app's live SHA's latest verification there (one query per deployed env/app)."""
        if self.store is None:
            return {}
        out: dict[tuple[str, str], Verification] = {}
        for c in changes:
            live = status_row(c)["live_sha"]
            found = self.store.verifications(env=c.env, app=c.app, sha=str(live), limit=1) if live else []
            if found:
                out[c.key] = found[0]
        ids = [v.id for v in out.values() if v.id is not None]
        untrusted = self.store.unverified_verifications(ids) if ids else {}  # marked, never shown as a verdict
        return {key: replace(v, chain_unverified=untrusted[v.id]) if v.id in untrusted else v
                for key, v in out.items()}

    def verifications(self, records: Sequence[AuditRecord]) -> list[Verification]:
        """Every verification of these attempts (the timeline marks them), newest first."""
        from deployctl.app.verify import verifications_of

        return verifications_of(self.store, [r.id for r in records]) if self.store is not None else []

    def last_deploys(self, targets: Sequence[Target]) -> dict[tuple[str, str], LastDeploy]:
        if self.store is None:
            return {}
        newest: dict[tuple[str, str], AuditRecord] = {}
        for t in targets:
            found = self.store.query(env=t.env, app=t.app, limit=1)
            if found:
                newest[t.key] = found[0]
        checked = self.checked(list(newest.values()))
        return {key: LastDeploy.of(c) for key, c in zip(newest, checked, strict=True)}

    def records(self, *, env: str | None = None, app: str | None = None, since: datetime | None = None,
                until: datetime | None = None, limit: int | None = 200) -> list[AuditRecord]:
        if self.store is None:
            return []
        return self.store.query(env=env, app=app, since=since, until=until, limit=limit)

    def checked(self, records: Sequence[AuditRecord]) -> list[CheckedRecord]:
        """``records``, each with whether its rows verify in the audit chain."""
        if self.store is None:
            return [CheckedRecord(r) for r in records]
        return check_records(self.store, records)

    def overlay_series(self, records: Sequence[AuditRecord], *, since: datetime | None,
                       until: datetime | None) -> tuple[Overlay, tuple[datetime, datetime] | None]:
        """The overlay's series over the timeline's range (as ``deployctl timeline --overlay`` draws it)."""
        from deployctl.edges.metrics import load_overlay
        from deployctl.views.timeline import time_range

        assert self.overlay is not None
        span = None
        if since is not None or self.overlay.spec.startswith("prometheus="):  # a CSV's own range is shown whole
            span = time_range(records, since=since, until=until, now=self.clock())
        series = load_overlay(self.overlay.spec, query=self.overlay.query, start=span[0] if span else None,
                              end=span[1] if span else None)
        return series, span

    def attempt(self, app: str, attempt_id: int) -> tuple[CheckedRecord, list[AttemptEvent]] | None:
        """One attempt of ``app`` (checked against the audit chain) and its rollout events, or None."""
        if self.store is None:
            return None
        record = self.store.get(attempt_id)
        if record is None or record.attempt.app != app:
            return None
        return check_records(self.store, [record])[0], self.store.events_of(attempt_id)
