"""Reconcile: observe the cluster, plan, apply in dependency order, wait for rollouts, record outcomes.

The shape follows Flux's reconcilers: guards first (namespaces the controller may touch), then
observe (one LIST per namespace and workload kind), plan (pure), act, and one outcome per
env/app, each recorded through the narrow :class:`AuditSink` interface. The run is idempotent:
nothing to change means zero writes, and a run killed at any line leaves workloads that the
next run converges from (each apply is one atomic server-side apply of image + annotations).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime

import structlog

from deployctl.errors import ClusterUnreachableError, DeployctlError, PreDeployError
from deployctl.model.state import DesiredState
from deployctl.model.vocabulary import WAIT, AppState, Result
from deployctl.model.workload import Health, Workload, combined_status
from deployctl.reconcile import runstate
from deployctl.reconcile.artifacts import pin_mode
from deployctl.reconcile.hooks import PreDeploySteps
from deployctl.reconcile.locking import check_held, release_left, replan, sleep_until_next_try, take_locks
from deployctl.reconcile.observe import ClusterPool, Observation, Seeds, observe_selection
from deployctl.reconcile.options import ReconcileOptions
from deployctl.reconcile.ordering import order_verdict
from deployctl.reconcile.outcome import (
    APPLIED,
    BLOCKED,
    DRIFT_CORRECTED,
    FAILED,
    IN_SYNC,
    INVALID,
    MISSING,
    REFUSED,
    SKIPPED,
    SUCCEEDED,
    SUSPENDED,
    Outcome,
    Progress,
    ReconcileResult,
)
from deployctl.reconcile.ports import Clusters
from deployctl.reconcile.runstate import AppLocking, AppRun, Prepared
from deployctl.reconcile.sink import AuditSink, DecisionItem, NullAudit
from deployctl.reconcile.wait import RolloutWatch, Waiting, check_rollouts
from deployctl.rules.ordering import Ordering, Verdict
from deployctl.rules.plan import Action, Change, annotations_for, dependency_order, make_plan

__all__ = [  # what callers take from here: the run, its result and the outcome vocabulary
    "APPLIED", "BLOCKED", "DRIFT_CORRECTED", "FAILED", "IN_SYNC", "INVALID", "MISSING", "REFUSED", "SKIPPED", "SUCCEEDED",
    "ClusterPool", "Outcome", "Prepared", "Progress", "ReconcileResult", "Reconciler"]

log = structlog.get_logger(__name__)

_MIN_CHECK_GAP = 0.05  # seconds between two rollout checks at least (a check reads memory, but of every app)


class Reconciler:
    """One reconcile run over a desired state: ``Reconciler(desired, clusters, options, ...).run()``."""

    def __init__(
        self,
        desired: DesiredState,
        clusters: Clusters,
        options: ReconcileOptions | None = None,
        *,
        audit: AuditSink | None = None,
        prepared: Prepared | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        locking: AppLocking | None = None,
    ) -> None:
        prepared = prepared or Prepared()
        self.desired = desired
        self.clusters = clusters
        self.options = options or ReconcileOptions()
        self.audit: AuditSink = audit or NullAudit()
        self.images: dict[tuple[str, str], str] = {}  # (env, app) -> the digest-pinned image to apply
        self.refusals = dict(prepared.refusals)
        self.pinner = prepared.pinner
        self.relation = prepared.relation  # (desired deploy commit, live one) -> Relation; None: no ordering check
        self._finishes: list[tuple[AppRun, str, str | None]] = []
        self._decisions: list[tuple[AppRun, DecisionItem]] = []  # never applied: attempt and outcome together
        self.on_progress = on_progress or (lambda p: None)
        self.clock = clock
        self._notes: dict[tuple[str, str], str] = {}  # audit notes of overrides (--force-older)
        self._watch: RolloutWatch | None = None
        self._seeds: Seeds = {}
        self.locking = locking  # None: no app locks (a run that cannot collide with another)
        self._unlock: list[AppRun] = []  # runs whose lock goes once their outcome is on record

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> ReconcileResult:
        started = time.monotonic()
        selection = self.options.selection
        seen = observe_selection(self.desired, self.clusters, envs=selection.envs, apps=selection.apps,
                                 allowed_namespaces=selection.allowed_namespaces,
                                 concurrency=self.options.timing.observe_concurrency)
        refused_envs = seen.refused
        self._seeds = seen.seeds
        self._pin(seen)
        plan = make_plan(self.desired, seen.live, envs=seen.envs, apps=selection.apps, images=self.images)
        log.info("reconcile.planned", ref=plan.ref, deploy_commit=plan.deploy_commit, **plan.counts)

        runs: dict[tuple[str, str], AppRun] = {}
        outcomes: dict[tuple[str, str], Outcome] = {}
        for change in plan.changes:
            run = AppRun(change)
            runs[change.key] = run
            reason = refused_envs.get(change.env) or self.refusals.get(change.key)
            order = self._ordering(change) if not reason and change.writes else Ordering(Verdict.APPLY)
            if order.note:
                self._notes[change.key] = order.note
                log.warning("ordering.overridden", env=change.env, app=change.app, note=order.note)
            if order.verdict is Verdict.SKIP:
                self._finish(run, SKIPPED, order.message, record=True)
            elif order.verdict is Verdict.REFUSE:
                self._finish(run, REFUSED, order.message, record=True)
            elif reason and change.action in (Action.UPDATE, Action.DRIFT, Action.BLOCKED):
                self._finish(run, REFUSED, reason, record=True)
            elif reason and change.env in refused_envs:
                self._finish(run, REFUSED, reason, record=False)
            elif change.action is Action.INVALID:
                self._finish(run, INVALID, change.reason, record=False)
            elif change.action is Action.MISSING:
                self._finish(run, MISSING, change.reason, record=False)
            elif change.action is Action.SUSPENDED:  # `deployctl suspend`: left alone, said so
                self._finish(run, SUSPENDED, change.reason, record=False)
            elif change.action is Action.BLOCKED:
                self._finish(run, BLOCKED, change.reason, record=True)
            elif change.action is Action.IN_SYNC:
                health = change.health
                if self.options.timing.wait and health is not None and health.health is Health.PROGRESSING:
                    run.state = AppState.WAITING  # e.g. left mid-rollout by an interrupted run: confirm it
                    run.workloads = change.workloads
                    run.started_at = self.clock()
                elif health is not None and health.health is Health.FAILED:
                    self._finish(run, IN_SYNC, f"in sync but unhealthy: {health.message}", record=False,
                                 healthy=False)
                else:
                    self._finish(run, IN_SYNC, health.message if health else "", record=False, healthy=True)

        self._execute(runs)
        for key, run in runs.items():
            assert run.outcome is not None, key
            outcomes[key] = run.outcome
        requests = self.clusters.requests()
        result = ReconcileResult(
            plan=plan,
            outcomes=tuple(outcomes[k] for k in sorted(outcomes)),
            requests=requests,
            seconds=time.monotonic() - started,
        )
        log.info("reconcile.finished", exit_code=result.exit_code, seconds=round(result.seconds, 3), requests=requests)
        return result

    def _ordering(self, change: Change) -> Ordering:
        """Never move backwards by accident: the verdict for the live deploy commits of ``change``'s workloads."""
        overrides = self.options.overrides
        return order_verdict(change, self.desired.commit, self.relation, force_older=overrides.force_older,
                             allow_non_descendant=overrides.allow_non_descendant)

    def _pin(self, seen: Observation) -> None:
        """Digest-pin the selected targets: reuse pins already applied for the same tag, resolve the rest."""
        self.images.update({k: v for k, v in seen.known_images.items() if k not in self.images})
        if self.pinner is None:
            return
        apps = self.options.selection.apps
        todo = [t for t in self.desired.targets
                if t.env in seen.envs and (not apps or t.app in apps) and t.key not in self.images
                and pin_mode(self.desired.config, t.app) == "digest"]
        if not todo:
            return
        decisions = self.pinner(todo)
        self.images.update(decisions.images)
        for key, reason in decisions.refusals.items():
            self.refusals.setdefault(key, reason)

    # -- execution ----------------------------------------------------------------------------

    def _execute(self, runs: dict[tuple[str, str], AppRun]) -> None:
        order = [(env, app) for env in sorted({k[0] for k in runs})
                 for app in dependency_order({k[1]: runs[k].change.depends_on for k in runs if k[0] == env})]
        self._flush_finishes()  # the plan's refusals and skips go on record before anything is applied
        deadline = time.monotonic() + self.options.timing.timeout
        self._pre_deploy = PreDeploySteps(self.clusters, self.desired.config, deadline=deadline,
                                          poll_interval=self.options.timing.poll_interval, clock=self.clock)
        self._watch = (RolloutWatch(self.clusters, seeds=self._seeds, deadline=deadline)
                       if self.options.timing.wait else None)
        try:
            self._loop(runs, order, deadline)
        except BaseException as exc:  # every attempt on record gets an outcome before the error goes up
            self._abandon(runs, exc)
            raise
        finally:
            if self._watch is not None:
                self._watch.close()
            release_left(runs.values(), self._unlock)  # only when the loop raised: let the next writer in
        self._flush_finishes()

    def _loop(self, runs: dict[tuple[str, str], AppRun], order: list[tuple[str, str]], deadline: float) -> None:
        timing = self.options.timing
        concurrency = max(1, timing.concurrency)
        last_poll = 0.0
        futures: dict[Future[tuple[Workload, ...]], tuple[str, str]] = {}
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="deployctl-apply") as pool:
            try:
                while any(r.outcome is None for r in runs.values()):
                    # Start every pending app whose dependencies allow it, in dependency order.
                    ready: list[AppRun] = []
                    now, room = time.monotonic(), runstate.lock_room(self.locking, runs.values(), self._unlock)
                    for key in order:
                        run = runs[key]
                        if run.state is not AppState.PENDING or len(futures) + len(ready) >= min(concurrency * 4, room):
                            continue
                        if run.lock_wait is not None and now < run.lock_wait[1]:
                            continue  # its lock is held by another run: try again at its next try
                        verdict = runstate.dependency_verdict(run, runs)
                        if verdict == WAIT:
                            continue
                        if verdict is not None:
                            self._finish(run, BLOCKED, verdict, record=True)
                            continue
                        ready.append(run)
                    for run in self._record_attempts(self._take_locks(ready, pool)):
                        futures[pool.submit(self._apply, run)] = run.change.key
                        run.state = AppState.APPLYING

                    if futures:
                        done, _ = wait(list(futures), timeout=timing.poll_interval, return_when=FIRST_COMPLETED)
                    else:  # only waiting: wake up on the next watch event (or the poll interval)
                        done = set()
                        if self._watch is not None and any(r.state is AppState.WAITING for r in runs.values()
                                                           if r.outcome is None):
                            gap = last_poll + _MIN_CHECK_GAP - time.monotonic()
                            if gap > 0:
                                time.sleep(gap)  # coalesce a burst of events into one check
                            self._watch.changed.wait(timing.poll_interval)
                        else:  # only apps waiting for their locks: sleep until the first next try
                            sleep_until_next_try(runs.values(), timing.poll_interval)
                    for fut in done:
                        key = futures.pop(fut)
                        run = runs[key]
                        try:
                            run.workloads = fut.result()
                        except ClusterUnreachableError:
                            raise
                        except DeployctlError as exc:
                            why = str(exc) if isinstance(exc, PreDeployError) else f"apply failed: {exc}"
                            self._finish(run, FAILED, why, record=True)
                            continue
                        if self.options.timing.wait:
                            run.state = AppState.WAITING
                            self.on_progress(Progress(run.change.env, run.change.app, AppState.WAITING, "rolling out"))
                        else:
                            self._finish(run, APPLIED, "applied; not waiting for the rollout (--no-wait)", record=True)

                    waiting = [r for r in runs.values() if r.state is AppState.WAITING and r.outcome is None]
                    now = time.monotonic()
                    # Checks read the watch's memory: check on every event, and at the poll interval
                    # (a first check also opens the informers: their one LIST each).
                    fresh_events = self._watch is not None and self._watch.changed.is_set()
                    tick = now - last_poll >= timing.poll_interval
                    if waiting and ((fresh_events and now - last_poll >= _MIN_CHECK_GAP) or tick):
                        last_poll = now
                        if self._watch is not None and not tick:  # check only the apps an event touched
                            touched = self._watch.take_changed()
                            waiting = [r for r in waiting if r.state is AppState.WAITING and any(
                                (r.change.target.context if r.change.target else None, w.namespace, w.kind, w.name)
                                in touched for w in r.workloads)]
                        elif self._watch is not None:
                            self._watch.take_changed()
                        self._poll(waiting)
                    if time.monotonic() > deadline:
                        for run in runs.values():
                            if run.outcome is None and run.state in (AppState.WAITING, AppState.PENDING):
                                status = combined_status(run.workloads).message if run.workloads else "not started"
                                run.events.stalled(self.clock(), f"timed out after {timing.timeout:.0f}s: {status}")
                                self._finish(
                                    run, FAILED, f"timed out after {timing.timeout:.0f}s: {status}",
                                    record=run.state is AppState.WAITING and run.change.writes,
                                )
                    if not futures and not any(r.state is AppState.WAITING and r.outcome is None for r in runs.values()):
                        # Nothing in flight: whatever is still pending waits on something that will not come.
                        stuck = [r for r in runs.values() if r.outcome is None and r.state is AppState.PENDING]
                        if stuck and all(runstate.dependency_verdict(r, runs) == WAIT for r in stuck):
                            for r in stuck:
                                self._finish(r, BLOCKED, "dependencies form a cycle or never started", record=True)
                    self._flush_finishes()
            except BaseException:
                for fut in futures:  # nothing queued starts once the run stopped
                    fut.cancel()
                raise

    def _take_locks(self, ready: list[AppRun], pool: ThreadPoolExecutor) -> list[AppRun]:
        """The runs of ``ready`` whose app lock is now theirs; the others wait for their next try or fail."""
        if not self.locking or not ready:
            return ready
        taken = take_locks(self.locking, ready, pool)
        for run, why in taken.failed:
            self._finish(run, FAILED, why, record=False)
        if taken.unreachable is not None:
            raise taken.unreachable
        for run in replan(taken.got, self.clusters, runstate.image_of):  # a run that held the lock wrote them
            self._finish(run, IN_SYNC, "in sync: written by the run that held its lock", record=False)
        return [r for r in taken.got if r.outcome is None]

    def _record_attempts(self, ready: list[AppRun]) -> list[AppRun]:
        """Put the attempts of a wave on record before any of them is applied (one write when the
        sink can batch). Returns the runs that may be applied; an app whose attempt cannot be
        recorded is not applied."""
        if not ready:
            return []
        items = [(run.change, runstate.image_of(run.change)) for run in ready]
        try:
            ids = self.audit.attempts_started(items, deploy_commit=self.desired.commit)
        except DeployctlError as exc:
            for run in ready:
                self._finish(run, FAILED, f"not applied: the attempt could not be recorded: {exc}", record=False)
            return []
        now = self.clock()
        for run, attempt_id in zip(ready, ids, strict=True):
            run.audit_id = attempt_id
            run.recorded = True
            run.started_at = now
        return ready

    def _flush_finishes(self) -> None:
        """Write the queued rollout events, outcomes and decisions, in one durable write each."""
        if self._finishes:
            queued, self._finishes = self._finishes, []
            events = [e for run, _, _ in queued if run.audit_id is not None for e in run.events.records(run.audit_id)]
            try:
                self.audit.rollout_events(events)  # before the outcomes: a record with an outcome has its story
            except DeployctlError as exc:
                log.error("audit.events_write_failed", events=len(events), error=str(exc))
            try:
                self.audit.attempts_finished([(run.audit_id, result, error) for run, result, error in queued])
            except DeployctlError as exc:
                runstate.not_written([(run, result) for run, result, _ in queued], exc)
        if self._decisions:
            decided, self._decisions = self._decisions, []
            try:
                ids = self.audit.decisions([item for _, item in decided], deploy_commit=self.desired.commit)
            except DeployctlError as exc:  # the outcomes stand; say loudly that their record was not written
                runstate.not_written([(run, item[2]) for run, item in decided], exc)
            else:
                for (run, _), attempt_id in zip(decided, ids, strict=True):
                    run.audit_id = attempt_id
        unlock, self._unlock = self._unlock, []
        for run in unlock:  # their outcomes are on record: the next writer of each app may go
            if run.lock is not None:
                run.lock.release()

    def _apply(self, run: AppRun) -> tuple[Workload, ...]:
        change = run.change
        image = runstate.image_of(change)
        self.on_progress(Progress(change.env, change.app, AppState.APPLYING, f"{change.old_sha or '-'} -> {image}"))
        log.info("apply.started", env=change.env, app=change.app, image=image, action=str(change.action))
        annotations = annotations_for(change, image, self.desired.commit, run.started_at or self.clock())
        assert change.target is not None
        check_held(run)
        self._pre_deploy.before(run, image, annotations)  # a data migration first (apps.<app>.pre_deploy)
        cluster = self.clusters(change.target.context)
        applied = []
        for w in change.workloads:
            applied.append(cluster.apply_image(w, container=change.target.container, image=image,
                                               annotations=annotations))
        run.events.applied(self.clock(), applied, image)
        return tuple(applied)

    def _poll(self, waiting: list[AppRun]) -> None:
        seen = check_rollouts(self.clusters, [
            Waiting(key=run.change.key, context=run.change.target.context if run.change.target else None,
                    namespace=run.change.namespace, workloads=run.workloads)
            for run in waiting
        ], watch=self._watch)
        for run in waiting:
            found = seen[run.change.key]
            run.workloads = found.workloads
            run.events.seen(self.clock(), found.workloads)
            if found.status.health is Health.HEALTHY:
                if not run.change.writes:
                    result = IN_SYNC
                elif run.change.action is Action.DRIFT:
                    result = DRIFT_CORRECTED
                else:
                    result = SUCCEEDED
                self._finish(run, result, found.status.message, record=run.change.writes)
            elif found.status.health is Health.FAILED:
                reasons = found.pod_reasons
                message = found.status.message + (f" (pods: {reasons})" if reasons else "")
                run.events.stalled(self.clock(), message)
                self._finish(run, FAILED, message, record=run.change.writes)

    def _abandon(self, runs: Mapping[tuple[str, str], AppRun], exc: BaseException) -> None:
        try:
            self._flush_finishes()
            if open_attempts := runstate.abandoned(runs.values(), exc):
                self.audit.attempts_finished(open_attempts)
        except DeployctlError as err:  # the run's own error goes up; a later run closes these as interrupted
            log.error("audit.abandon_failed", error=str(err), run_error=str(exc))

    def _finish(self, run: AppRun, result: Result, message: str, *, record: bool,
                healthy: bool | None = None) -> None:
        change = run.change
        now = self.clock()
        audit_id = run.audit_id
        audit_result = result.recorded_as
        error = None if result.changed else message
        note = self._notes.get(change.key)
        if note is not None:
            error = note if not error else f"{error}; {note}"
            message = note if not message else f"{message} ({note})"
        if record and audit_id is not None:
            run.events.verdict(now, audit_result, message)
            self._finishes.append((run, audit_result, error))  # written by _flush_finishes, this wave
        elif record:  # never applied (blocked, refused, skipped): its attempt and outcome go on record together
            self._decisions.append((run, (change, runstate.image_of(change), audit_result, error)))  # one write a wave
        run.state = AppState.DONE
        if run.lock is not None:
            self._unlock.append(run)
        run.outcome = Outcome(
            env=change.env,
            app=change.app,
            action=change.action,
            result=result,
            message=message,
            old_sha=change.old_sha,
            new_sha=change.new_sha,
            image=change.desired_image,
            workloads=tuple(f"{w.namespace}/{w.ref}" for w in change.workloads),
            started_at=run.started_at or now,
            finished_at=now,
            audit_id=audit_id,
            healthy=healthy if healthy is not None else (result in (SUCCEEDED, DRIFT_CORRECTED) or None),
        )
        if result.is_problem:
            log.warning("app.outcome", env=change.env, app=change.app, result=result, message=message,
                        sha=change.new_sha)
        elif result is not Result.IN_SYNC:  # thousands of in-sync apps are one reconcile.finished event, not a log line each
            log.info("app.outcome", env=change.env, app=change.app, result=result, message=message,
                     sha=change.new_sha)
        self.on_progress(Progress(change.env, change.app, result, message))
