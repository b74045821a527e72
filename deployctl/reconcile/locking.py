"""One writer per app: a run takes an app's lock just before its attempt is recorded, only for the apps it
writes, and lets it go once the app's outcome is on record (:class:`~deployctl.reconcile.reconciler.Reconciler`).
An app whose lock another run holds waits for its next try while the others go on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from time import monotonic, sleep

import structlog

from deployctl.edges.kube.locks import LockHolder, printable
from deployctl.errors import ClusterUnreachableError, DeployctlError, LockLostError
from deployctl.reconcile.ports import Clusters, Lock
from deployctl.reconcile.runstate import AppLocking, AppRun
from deployctl.rules.plan import Change

log = structlog.get_logger(__name__)


@dataclass
class Taken:
    """One wave's tries: the runs whose lock is theirs now, the ones that failed (and why), and the API
    being unreachable (the caller stops the run)."""

    got: list[AppRun] = field(default_factory=list)
    failed: list[tuple[AppRun, str]] = field(default_factory=list)
    unreachable: ClusterUnreachableError | None = None


def take_locks(locking: AppLocking, ready: list[AppRun], pool: ThreadPoolExecutor) -> Taken:
    """One try at the lock of each run of ``ready`` (in parallel). A run whose lock is held by another run
    gets its next try in ``run.lock_wait``, up to the lock timeout; then it fails, unapplied."""

    def take(run: AppRun) -> Lock | LockHolder | DeployctlError:
        change = run.change
        try:
            return locking.locks.try_take(change.target.context if change.target else None, change.namespace,
                                          change.app, identity=locking.identity, lease=locking.lease)
        except DeployctlError as exc:
            return exc

    answers = list(pool.map(take, ready)) if len(ready) > 1 else [take(ready[0])]
    now = monotonic()
    retry = max(0.2, min(2.0, locking.lease / 5))
    taken = Taken()
    for run, answer in zip(ready, answers, strict=True):
        change = run.change
        if isinstance(answer, DeployctlError):
            if isinstance(answer, ClusterUnreachableError):
                taken.unreachable = answer
            taken.failed.append((run, f"not applied: its lock could not be taken: {answer}"))
        elif isinstance(answer, LockHolder):
            since, _, seen = run.lock_wait or (now, now, None)
            who = printable(answer.identity or "another run")
            when = printable((answer.since or "")[11:19]) or "?"
            if now - since >= locking.timeout:
                taken.failed.append((run, f"lock lease {answer.lease} is held by {who} since {when}; gave up after "
                                          f"{locking.timeout:.0f}s (--lock-timeout); not applied"))
                continue
            run.lock_wait = (since, now + retry, answer.identity)
            if answer.identity != seen:
                log.info("lock.waiting", env=change.env, app=change.app, holder=answer.identity, since=answer.since)
                if locking.on_wait is not None:
                    locking.on_wait(f"waiting for {change.env}/{change.app}: held by {who} since {when}")
        else:
            run.lock = answer
            run.lock_wait = None
            taken.got.append(run)
    if taken.got and locking.close_interrupted is not None:
        for env in sorted({r.change.env for r in taken.got}):
            try:  # an attempt that an earlier holder of these locks left open is over: it lost the lock
                locking.close_interrupted(env, [r.change.app for r in taken.got if r.change.env == env])
            except DeployctlError as exc:
                log.error("audit.close_interrupted_failed", env=env, error=str(exc))
    return taken


def sleep_until_next_try(runs: Iterable[AppRun], cap: float) -> None:
    """Sleep until the first next try of a run waiting for its lock (at most ``cap`` seconds)."""
    tries = [r.lock_wait[1] for r in runs if r.outcome is None and r.lock_wait is not None]
    if tries:
        sleep(max(0.0, min(min(tries) - monotonic(), cap)))


def release_left(runs: Iterable[AppRun], releasing: Sequence[AppRun]) -> None:
    """Release the locks still held by ``runs`` that are not already on their way out (``releasing``)."""
    going = {id(r) for r in releasing}
    for run in runs:
        if run.lock is not None and id(run) not in going:
            run.lock.release()


def replan(runs: Sequence[AppRun], clusters: Clusters, image_of: Callable[[Change], str]) -> list[AppRun]:
    """Plan the runs that just took their locks again from what is live now (their workloads read per
    namespace and kind, :meth:`Workloads.read_workloads`): the ones whose workloads already run their image
    (a run that held the lock since the plan wrote them: nothing is left to write); the others go on with
    their workloads as they are now."""
    wanted: dict[tuple[str | None, str, str], set[str]] = {}
    for run in runs:
        context = run.change.target.context if run.change.target else None
        for w in run.change.workloads:
            wanted.setdefault((context, w.namespace, w.kind), set()).add(w.name)
    now = {key: clusters(key[0]).read_workloads(key[1], key[2], names) for key, names in wanted.items()}
    in_sync: list[AppRun] = []
    for run in runs:
        change = run.change
        context = change.target.context if change.target else None
        fresh = [now[(context, w.namespace, w.kind)].get(w.name, w) for w in change.workloads]
        container = change.target.container if change.target else ""
        if all(w.images.get(container) == image_of(change) for w in fresh):
            in_sync.append(run)
        else:
            run.change = replace(change, workloads=tuple(fresh))
    return in_sync


def check_held(run: AppRun) -> None:
    """Raises :class:`LockLostError` when ``run`` holds its app's lock no more (not renewed in time)."""
    if run.lock is not None and not run.lock.held():
        change = run.change
        raise LockLostError(f"the lock of {change.env}/{change.app} could not be renewed in time; not applied "
                            "(another run may hold it now)")
