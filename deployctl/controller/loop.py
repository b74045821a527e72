"""The controller: watch the deploy repo's branch and keep the cluster on it.

One worker thread runs the loop: wait for a webhook or the interval, fetch the branch into
the mirror, reconcile its head. Every interval it reconciles even without a new commit, which
is what finds and corrects drift. One reconcile runs at a time; sync requests that arrive
meanwhile coalesce into one next run, at whatever the branch head is by then.

Acting is gated: every cluster call and every audit attempt of a run first asks
:meth:`Controller.may_act` (still the leader? not shutting down?). When the answer turns to
no, the run stops at its next step, attempts already on record are closed as ``interrupted``,
and nothing more is written. An apply already on the wire finishes (it is one atomic
server-side apply); the rollout it started is confirmed by whoever reconciles next.

The worker never dies quietly: whatever a run raises (a ``DeployctlError`` or anything else: a
NUL byte that reaches the file system, MemoryError) is logged with its traceback, counted in
``deployctl_reconcile_errors_total`` and the loop goes on. :meth:`Controller.health` turns false
when the worker thread is gone or has not finished an iteration within ``3 x interval + timeout``
(``/healthz`` then fails and Kubernetes restarts the pod); :meth:`Controller.ready` is true only on
the leader once a run of its current term finished.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from deployctl.app.run import Run, audit_recorder, lock_identity, run_once
from deployctl.controller.decisions import OncePerDecision
from deployctl.controller.metrics import ControllerMetrics
from deployctl.edges.git.mirror import Mirror
from deployctl.edges.git.repo import read_desired_state
from deployctl.edges.kube.locks import LeaseLocks
from deployctl.errors import DeployctlError
from deployctl.model import audit as audit_mod
from deployctl.model.audit import AttemptEvent, AuditRecord
from deployctl.model.vocabulary import Result, RunStatus, Trigger
from deployctl.reconcile.observe import ClusterPool
from deployctl.reconcile.options import Locking, ReconcileOptions, Selection, Timing
from deployctl.reconcile.outcome import ReconcileResult
from deployctl.reconcile.ports import GatedClusters
from deployctl.reconcile.sink import AttemptItem, DecisionItem, FinishItem, RunAudit

if TYPE_CHECKING:
    from deployctl.controller.shards import ShardRuns

log = structlog.get_logger(__name__)


class Stopped(Exception):  # noqa: N818 - a signal, not an error a user sees
    """Raised inside a reconcile run when the controller may no longer act (deliberately not a DeployctlError,
    so the reconciler does not turn it into an app outcome)."""


def controller_runs(*, timeout: float = 300.0, concurrency: int = 16, poll_interval: float = 0.5,
                    allowed_namespaces: tuple[str, ...] = (), lock_lease: float = 15.0) -> ReconcileOptions:
    """The options of every run a controller makes: it always waits for rollouts, and LISTs one at a time
    (a long-lived process: lower peak memory beats a faster LIST)."""
    return ReconcileOptions(
        selection=Selection(allowed_namespaces=allowed_namespaces),
        timing=Timing(wait=True, timeout=timeout, concurrency=concurrency, poll_interval=poll_interval,
                      observe_concurrency=1),
        locking=Locking(lease=lock_lease),
    )


@dataclass(frozen=True)
class ControllerSettings:
    branch: str = "main"
    interval: float = 30.0
    runs: ReconcileOptions = field(default_factory=controller_runs)  # the options of every run (controller_runs)


class _GatedAudit:
    """An :class:`~deployctl.reconcile.sink.AuditSink` that remembers open attempts and refuses new ones once
    acting must stop, so a stopped run can close what it started."""

    def __init__(self, inner: RunAudit, may_act: Callable[[], bool], why: Callable[[], str]) -> None:
        self.inner = inner
        self.may_act = may_act
        self.why = why
        self._open: set[int] = set()
        self._closed = False
        self._lock = threading.Lock()

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        if not self.may_act():
            raise Stopped(self.why())
        ids = self.inner.attempts_started(items, deploy_commit=deploy_commit)
        with self._lock:
            self._open.update(i for i in ids if i is not None)
        return ids

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        with self._lock:
            if self._closed:
                return
            mine = [item for item in items if item[0] in self._open]
            self._open.difference_update(item[0] for item in mine)
        if mine:
            self.inner.attempts_finished(mine)

    def close_interrupted(self, *, env: str | None = None, apps: Sequence[str] | None = None) -> list[int]:
        return self.inner.close_interrupted(env=env, apps=apps)

    def open_attempts(self, envs: Sequence[str]) -> list[AuditRecord]:
        return self.inner.open_attempts(envs)

    def close_abandoned(self, attempt_ids: Sequence[int]) -> list[int]:
        if not self.may_act():
            raise Stopped(self.why())
        return self.inner.close_abandoned(attempt_ids)

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        if not self.may_act():
            raise Stopped(self.why())
        return self.inner.decisions(items, deploy_commit=deploy_commit)  # each written with its outcome

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        with self._lock:
            if self._closed:
                return
        self.inner.rollout_events(events)

    def close_open(self, reason: str) -> list[int]:
        """Close every attempt still open as ``interrupted``; later outcomes of this run are dropped."""
        with self._lock:
            self._closed = True
            ids = sorted(self._open)
            self._open.clear()
        if ids:
            self.inner.attempts_finished([(attempt_id, Result.INTERRUPTED, reason) for attempt_id in ids])
        return ids


class Controller:
    """The watch loop. Call :meth:`run` in a thread; :meth:`request_sync` and :meth:`stop` from anywhere."""

    def __init__(
        self,
        mirror: Mirror,
        clusters: ClusterPool,
        *,
        settings: ControllerSettings,
        store: audit_mod.AuditStore | None = None,
        metrics: ControllerMetrics | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        shards: ShardRuns | None = None,
    ) -> None:
        self.mirror = mirror
        self.pool = clusters
        self.settings = settings
        self.store = store
        self.metrics = metrics or ControllerMetrics()
        self.is_leader = is_leader
        self.shards = shards  # sharded: each run reconciles only the keys of the slots this replica holds
        self._cond = threading.Condition()
        self._pending: str | None = None  # trigger of a requested sync
        self._pending_since = 0.0  # when the first trigger of the pending sync came (monotonic)
        self._queued_since = time.monotonic()  # of the sync being served: when its first trigger came
        self._stopping: str | None = None
        self._new_term = True
        self._fetched = False
        self._reconciled = False
        self._last_sha: str | None = None
        self._running = threading.Event()
        self.reconciles = 0
        self._term = 0  # bumped when this replica becomes leader
        self._done_term = -1  # the term in which the last run finished (ok, failed or errored)
        self._progress = time.monotonic()  # when the worker last finished an iteration (or started)
        self._worker: threading.Thread | None = None
        self._last_error: str | None = None
        self.on_reconciled: Callable[[ReconcileResult], None] | None = None  # e.g. the workload cache

    # -- requests from other threads ----------------------------------------------------------

    def request_sync(self, trigger: str, *, sha: str | None = None) -> None:
        """Ask for a fetch and reconcile as soon as the current run (if any) is over."""
        with self._cond:
            if self._pending is None:
                self._pending_since = time.monotonic()
            if self._pending != Trigger.WEBHOOK:  # a webhook request stays a webhook request when coalesced
                self._pending = trigger
            self._cond.notify_all()
        log.info("sync.requested", trigger=trigger, sha=sha)

    def leadership_started(self) -> None:
        with self._cond:
            self._new_term = True
            self._term += 1
        self.metrics.leader.set(1)
        self.request_sync(Trigger.WATCH)

    def leadership_stopped(self) -> None:
        self.metrics.leader.set(0)

    def stop(self, reason: str) -> None:
        """Stop acting at once and end :meth:`run` after the current step."""
        with self._cond:
            if self._stopping is None:
                self._stopping = reason
                log.info("controller.stopping", reason=reason)
            self._cond.notify_all()

    # -- state --------------------------------------------------------------------------------

    def may_act(self) -> bool:
        return self._stopping is None and self.is_leader()

    def _check(self) -> None:
        """Raises :class:`Stopped` once this replica may no longer act (asked before every cluster call)."""
        if not self.may_act():
            raise Stopped(self._why_not())

    def _why_not(self) -> str:
        if self._stopping is not None:
            return f"controller stopped ({self._stopping}) before the run finished"
        return "this replica lost the leader lease before the run finished"

    def stall_limit(self) -> float:
        """Seconds the worker may go without finishing an iteration: three intervals plus one run's timeout."""
        return 3 * self.settings.interval + self.settings.runs.timing.timeout

    def health(self) -> tuple[bool, str]:
        """False when the worker cannot go on: its thread is gone, or it is stuck (see :meth:`stall_limit`)."""
        if self._stopping is not None:
            return True, "shutting down"
        worker = self._worker
        if worker is not None and not worker.is_alive():
            return False, "the controller's worker thread has exited"
        idle = time.monotonic() - self._progress
        if idle > self.stall_limit():
            return False, (f"the worker has not finished a run for {idle:.0f}s (limit {self.stall_limit():.0f}s: "
                           "3 intervals plus the run timeout)")
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready (to be sent webhooks) only on a healthy leader once a run of its current term finished."""
        if self._stopping is not None:
            return False, "shutting down"
        healthy, why = self.health()
        if not healthy:
            return False, why
        if not self.is_leader():
            return False, "standby: another replica holds (or is taking) the leader lease"
        if self._done_term != self._term:
            return False, "the first run as leader has not finished yet"
        if self._last_error is not None:
            return True, f"leader; the last run raised {self._last_error}"
        if self._last_sha is None:
            return True, "leader; no run has reconciled yet (see reconcile.error in the log)"
        return True, f"leader; reconciled {self._last_sha}"

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Fetch and reconcile until :meth:`stop`."""
        interval = self.settings.interval
        next_check = time.monotonic()
        self._worker = threading.current_thread()
        self._progress = time.monotonic()
        log.info("controller.started", repo=self.mirror.source.display, branch=self.settings.branch,
                 interval=interval)
        while True:
            with self._cond:
                while self._stopping is None and self._pending is None and time.monotonic() < next_check:
                    self._cond.wait(timeout=max(0.0, next_check - time.monotonic()))
                if self._stopping is not None:
                    break
                trigger = self._pending or Trigger.WATCH
                # queued since its first trigger; an interval's run since it came due
                self._queued_since = self._pending_since if self._pending is not None else next_check
                self._pending = None
            next_check = time.monotonic() + interval
            try:
                self.sync_once(trigger)
            except Exception as exc:  # noqa: BLE001 - the last line of defence: log, count, go on
                self._raised("run", exc, trigger=trigger, seconds=0.0)
            self._progress = time.monotonic()
        log.info("controller.stopped", reason=self._stopping)

    def _raised(self, stage: str, exc: BaseException, *, trigger: str, seconds: float, sha: str | None = None) -> None:
        """A run raised something other than a handled error: log its traceback, count it, go on."""
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        log.error("reconcile.crashed", stage=stage, sha=sha, trigger=trigger, error_type=type(exc).__name__,
                  error=str(exc)[:300],
                  traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        if stage == "reconcile":
            self.metrics.observe_aborted(seconds=seconds, trigger=trigger, status=RunStatus.ERROR,
                                         error_type=type(exc).__name__)
        else:
            self.metrics.observe_error(stage=stage, error_type=type(exc).__name__)
        with self._cond:
            self._new_term = True  # the next run closes what this one left open as interrupted

    def sync_once(self, trigger: str) -> ReconcileResult | None:
        """One fetch, then (if we may act) one reconcile of the branch head."""
        term = self._term
        try:
            sha = self.mirror.fetch()
        except DeployctlError as exc:
            log.error("mirror.fetch_failed", error=str(exc))
            self.metrics.observe_error(stage="fetch", error_type=type(exc).__name__)
            return None
        except Exception as exc:  # noqa: BLE001 - see _raised
            self._raised("fetch", exc, trigger=trigger, seconds=0.0)
            return None
        self._fetched = True
        self.metrics.head.set(time.time())
        if sha != self._last_sha:
            log.info("mirror.fetched", sha=sha, previous=self._last_sha)
        if not self.may_act():
            return None
        started = time.monotonic()
        try:
            result = self._reconcile(sha, trigger)
        except Exception as exc:  # noqa: BLE001 - see _raised
            self._raised("reconcile", exc, trigger=trigger, seconds=time.monotonic() - started, sha=sha)
            result = None
        else:
            if result is not None:
                self._last_error = None
        self._done_term = term
        return result

    def _reconcile(self, sha: str, trigger: str) -> ReconcileResult | None:
        started = time.monotonic()
        self.metrics.queue_time.labels(trigger=trigger).observe(max(0.0, started - self._queued_since))
        self._running.set()
        gated_audit: _GatedAudit | None = None
        try:
            desired = read_desired_state(self.mirror.path, ref=sha)
            if self.shards is not None:
                desired = self.shards.begin(desired)
            for p in desired.problems:
                log.warning("desired_state.problem", problem=str(p))
            close_interrupted, self._new_term = self._new_term, False
            log.info("reconcile.started", sha=sha, trigger=trigger)
            identity = lock_identity()
            if self.store is not None:
                recorder = audit_recorder(desired, self.store, repo_path=self.mirror.path, trigger=trigger,
                                          identity=identity)
                fenced = self.shards.audit(recorder) if self.shards is not None else recorder
                # a skipped/refused decision is recorded once, not every interval
                gated_audit = _GatedAudit(OncePerDecision(fenced, self.store), self.may_act, self._why_not)
            # the same pipeline and guards as `deployctl reconcile`: gates, approvals, freezes, digest pins
            result = run_once(desired, Run(
                clusters=GatedClusters(self.shards.clusters(self.pool, desired) if self.shards else self.pool,
                                       self._check),
                locks=self.shards.locks(self.pool, desired) if self.shards else LeaseLocks(self.pool),
                options=self.settings.runs,
                repo_path=self.mirror.path, audit=gated_audit, store=self.store, identity=identity,
                # whatever a previous leader (or our own crashed run) left open is over once we lead
                close_interrupted=close_interrupted,
            ))
        except Stopped as exc:
            seconds = time.monotonic() - started
            closed = gated_audit.close_open(str(exc)) if gated_audit else []
            log.warning("reconcile.stopped", sha=sha, reason=str(exc), interrupted_attempts=closed,
                        seconds=round(seconds, 3))
            self.metrics.observe_aborted(seconds=seconds, trigger=trigger, status=RunStatus.STOPPED)
            return None
        except DeployctlError as exc:
            seconds = time.monotonic() - started
            log.error("reconcile.error", sha=sha, error=str(exc), seconds=round(seconds, 3))
            self.metrics.observe_aborted(seconds=seconds, trigger=trigger, status=RunStatus.ERROR)
            return None
        finally:
            self._running.clear()
            if self.shards is not None:
                self.shards.end()
        self.metrics.observe_reconcile(result.outcomes, seconds=result.seconds, trigger=trigger,
                                       exit_code=result.exit_code)
        log.info("reconcile.done", sha=sha, trigger=trigger, exit_code=int(result.exit_code),
                 seconds=round(result.seconds, 3), **{str(r): n for r, n in result.tally().items()})
        self._last_sha = sha
        self._reconciled = True
        self.reconciles += 1
        if self.on_reconciled is not None:
            self.on_reconciled(result)
        return result


# -- the whole process: worker thread, lease thread, HTTP endpoint, signals ----------------------


