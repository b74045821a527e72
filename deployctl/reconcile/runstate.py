"""What one reconcile run carries: what the outer run decided before it (:class:`Prepared`) and each
env/app's state through it (:class:`AppRun`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import structlog

from deployctl.errors import ClusterUnreachableError, DeployctlError
from deployctl.model.state import Target
from deployctl.model.vocabulary import WAIT, AppState, Result
from deployctl.model.workload import Workload
from deployctl.reconcile.artifacts import PinDecisions
from deployctl.reconcile.outcome import Outcome
from deployctl.reconcile.ports import Lock, Locks
from deployctl.reconcile.rollout_events import RolloutLog
from deployctl.reconcile.sink import FinishItem
from deployctl.rules.ordering import Relation
from deployctl.rules.plan import Change

log = structlog.get_logger(__name__)


@dataclass
class AppRun:
    """One env/app's way through a run: its change, where it stands, its record and its outcome."""

    change: Change
    state: AppState = AppState.PENDING
    audit_id: int | None = None
    recorded: bool = False  # the attempt is on record (written before the apply)
    started_at: datetime | None = None
    workloads: tuple[Workload, ...] = ()
    outcome: Outcome | None = None
    events: RolloutLog = field(default_factory=RolloutLog)  # between the apply and the verdict, for the record
    lock: Lock | None = None  # the app's lock, held from before its attempt is recorded until its outcome is
    lock_wait: tuple[float, float, str | None] | None = None  # (waiting since, next try, holder last seen)


@dataclass(frozen=True)
class AppLocking:
    """How a run takes the app locks: one writer per app, taken only for the apps it writes."""

    locks: Locks
    identity: str  # this run's name in the locks (and the audit's lock_holder)
    lease: float = 15.0  # seconds a lock outlives a holder that stopped renewing it
    timeout: float = 300.0  # seconds an app waits for its lock before it fails
    max_held: int = 256  # locks held at once (``options.Locking.max_held``)
    on_wait: Callable[[str], None] | None = None  # a line when an app's lock is held by another run
    # once an app's lock is taken: close the attempts its earlier holders left open, (env, apps) at a time
    close_interrupted: Callable[[str, Sequence[str]], object] | None = None


@dataclass(frozen=True)
class Prepared:
    """What the outer run (:func:`deployctl.app.run.run_once`) decided before the reconciler starts."""

    refusals: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (env, app) -> why it is not applied
    pinner: Callable[[Sequence[Target]], PinDecisions] | None = None  # digest pins for targets (None: tags)
    relation: Callable[[str, str], Relation] | None = None  # how two deploy commits relate (None: no check)


def dependency_verdict(run: AppRun, runs: Mapping[tuple[str, str], AppRun]) -> str | None:
    """None when the app may start, WAIT while a dependency is in flight, else why it is blocked."""
    for dep in run.change.depends_on:
        dep_run = runs.get((run.change.env, dep))
        if dep_run is None:
            continue
        outcome = dep_run.outcome
        if outcome is None:
            return WAIT
        if outcome.result.satisfies_dependents:
            continue
        if outcome.result is Result.IN_SYNC and outcome.healthy is not False:
            continue
        detail = f": {outcome.message}" if outcome.message else ""
        return f"dependency {dep} {outcome.result}{detail}"
    return None


def not_written(runs: Sequence[tuple[AppRun, str]], exc: DeployctlError) -> None:
    """Say loudly that the audit records of ``runs`` (with their results) were not written, and why."""
    for run, result in runs:
        log.error("audit.write_failed", env=run.change.env, app=run.change.app, result=result, error=str(exc))
        if run.outcome is not None:
            run.outcome = replace(run.outcome, message=f"{run.outcome.message} (audit record not written: {exc})")


def image_of(change: Change) -> str:
    """The image a change applies: the digest-pinned one when pinned, else the target's."""
    return change.desired_image or (change.target.image if change.target else "")


def lock_room(locking: AppLocking | None, runs: Iterable[AppRun], releasing: Sequence[AppRun]) -> int:
    """How many more apps a run may start now: the app locks it holds (each through its rollout wait, and
    until its outcome is on record) stay within ``locking.max_held``, what its renewer keeps alive."""
    if locking is None:
        return 2**31
    held = sum(1 for run in runs if run.lock is not None and run.outcome is None) + len(releasing)
    return locking.max_held - held


def abandoned(runs: Iterable[AppRun], exc: BaseException) -> list[FinishItem]:
    """The outcomes to record for the attempts on record a run cannot finish because ``exc`` stopped it:
    none is left open for a later run to close as if this process had died (it did not; its run stopped)."""
    if isinstance(exc, ClusterUnreachableError):
        result, why = Result.FAILED, "the Kubernetes API became unreachable"
    else:
        result = Result.FAILED if isinstance(exc, DeployctlError) else Result.INTERRUPTED
        why = f"the run stopped before this outcome was known: {type(exc).__name__}: {exc}"
    return [(run.audit_id, result, why) for run in runs if run.outcome is None and run.audit_id is not None]
