"""Reconcile: observe the cluster, plan, apply in dependency order, wait for rollouts, record outcomes.

The shape follows Flux's reconcilers: guards first (namespaces the controller may touch), then
observe (one LIST per namespace and workload kind), plan (pure), act, and one outcome per
env/app, each recorded through the narrow :class:`AuditSink` interface. The run is idempotent:
nothing to change means zero writes, and a run killed at any line leaves workloads that the
next run converges from (each apply is one atomic server-side apply of image + annotations).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

import structlog

from deployctl.edges.kube.cluster import Cluster, ClusterError
from deployctl.errors import ClusterUnreachableError, DeployctlError
from deployctl.model.state import DesiredState, Target
from deployctl.model.workload import (
    ANN_APPLIED_AT,
    ANN_CHANGE_CAUSE,
    ANN_COMMIT,
    ANN_DEPLOY_COMMIT,
    ANN_DEPLOY_FILE,
    ANN_DIGEST,
    ANN_IMAGE,
    KINDS,
    Health,
    Workload,
    combined_status,
)
from deployctl.reconcile.artifacts import PinDecisions, known_pins, pin_mode
from deployctl.rules.plan import Action, Change, Plan, dependency_order, make_plan

log = structlog.get_logger(__name__)

# Outcome results. The audit vocabulary (succeeded, failed, blocked, drift-corrected, refused)
# plus what needs no record: in-sync, applied (--no-wait), missing, invalid.
SUCCEEDED = "succeeded"
APPLIED = "applied"
DRIFT_CORRECTED = "drift-corrected"
IN_SYNC = "in-sync"
FAILED = "failed"
BLOCKED = "blocked"
MISSING = "missing"
INVALID = "invalid"
REFUSED = "refused"
SUSPENDED = "suspended"

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_UNREACHABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class Outcome:
    """How one env/app ended in this run."""

    env: str
    app: str
    action: Action
    result: str
    message: str = ""
    old_sha: str | None = None
    new_sha: str | None = None
    image: str | None = None
    workloads: tuple[str, ...] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    audit_id: int | None = None
    healthy: bool | None = None  # for in-sync apps: is the running rollout healthy?

    @property
    def key(self) -> tuple[str, str]:
        return (self.env, self.app)

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "env": self.env,
            "app": self.app,
            "action": str(self.action),
            "result": self.result,
            "message": self.message,
            "old_sha": self.old_sha,
            "new_sha": self.new_sha,
            "image": self.image,
            "workloads": list(self.workloads),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round(self.seconds, 3) if self.seconds is not None else None,
        }


@dataclass(frozen=True)
class ReconcileResult:
    plan: Plan
    outcomes: tuple[Outcome, ...]
    requests: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        results = {o.result for o in self.outcomes}
        if results & {INVALID, REFUSED}:
            return EXIT_INVALID
        if results & {FAILED, BLOCKED, MISSING}:
            return EXIT_FAILED
        return EXIT_OK

    def writes(self) -> int:
        return sum(n for verb, n in self.requests.items() if verb in ("PATCH", "PUT", "POST", "DELETE"))

    def as_dict(self) -> dict[str, object]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.result] = counts.get(o.result, 0) + 1
        return {
            "ref": self.plan.ref,
            "deploy_commit": self.plan.deploy_commit,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "requests": dict(self.requests),
            "counts": counts,
            "outcomes": [o.as_dict() for o in self.outcomes],
        }


@dataclass(frozen=True)
class Progress:
    """A state change of one env/app during a run, for live displays."""

    env: str
    app: str
    state: str  # applying, waiting, or a final result
    message: str = ""


class AuditSink(Protocol):
    """What reconcile needs from the audit history: record an attempt before acting, its outcome after."""

    def attempt_started(self, change: Change, *, image: str, deploy_commit: str | None) -> int | None: ...

    def attempt_finished(self, attempt_id: int | None, *, result: str, error: str | None) -> None: ...


class NullAudit:
    """Records nothing; events still go to structlog."""

    def attempt_started(self, change: Change, *, image: str, deploy_commit: str | None) -> int | None:
        return None

    def attempt_finished(self, attempt_id: int | None, *, result: str, error: str | None) -> None:
        return None


ClusterFor = Callable[[str | None], Cluster]


class ClusterPool:
    """One :class:`Cluster` per kubeconfig context, created on first use."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context_override = context
        self._clusters: dict[str | None, Cluster] = {}
        self._lock = threading.Lock()

    def __call__(self, context: str | None) -> Cluster:
        key = self.context_override or context
        with self._lock:
            if key not in self._clusters:
                self._clusters[key] = Cluster(kubeconfig=self.kubeconfig, context=key)
            return self._clusters[key]

    def requests(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for c in self._clusters.values():
            for verb, n in c.requests.items():
                total[verb] = total.get(verb, 0) + n
        return total


def check_namespaces(desired: DesiredState, allowed: Sequence[str]) -> dict[str, str]:
    """Environments whose namespace the controller may not touch (env -> reason)."""
    if not allowed or desired.config is None:
        return {}
    refused = {}
    for name, env in desired.config.environments.items():
        if env.namespace not in allowed:
            refused[name] = (
                f"environment {name}: namespace {env.namespace!r} is not allowed by --allow-namespace "
                f"({', '.join(allowed)}); the deploy repo cannot widen deployctl's reach"
            )
    return refused


def observe(
    desired: DesiredState, clusters: ClusterFor, *, envs: Sequence[str] = (), concurrency: int = 2
) -> dict[str, list[Workload]]:
    """The labelled workloads of every selected environment's namespace (one LIST per kind)."""
    live: dict[str, list[Workload]] = {}
    if desired.config is None:
        return live
    wanted: dict[str, str | None] = {}
    for name in sorted(desired.config.environments):
        env = desired.config.environments[name]
        if (not envs or name in envs) and env.namespace not in wanted:
            wanted[env.namespace] = env.context
    jobs = [(ns, kind) for ns in wanted for kind in KINDS]
    if concurrency <= 1 or len(jobs) <= 2:
        results = [clusters(wanted[ns]).list_kind(ns, kind) for ns, kind in jobs]
    else:  # the server encodes one LIST while we decode another; a bound keeps peak memory down
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="deployctl-list") as pool:
            results = list(pool.map(lambda job: clusters(wanted[job[0]]).list_kind(job[0], job[1]), jobs))
    for (ns, _), workloads in zip(jobs, results, strict=True):
        live.setdefault(ns, []).extend(workloads)
    return live


@dataclass(frozen=True)
class Observation:
    """What the cluster shows for a selection of a desired state, before anything is decided."""

    envs: tuple[str, ...]  # the selected environments (all of the config's when none was asked for)
    refused: Mapping[str, str]  # env -> why its namespace may not be touched (not observed)
    live: Mapping[str, list[Workload]]  # namespace -> labelled workloads
    known_images: Mapping[tuple[str, str], str]  # digest pins already applied for the same tag


def observe_selection(
    desired: DesiredState,
    clusters: ClusterFor,
    *,
    envs: Sequence[str] = (),
    apps: Sequence[str] = (),
    allowed_namespaces: Sequence[str] = (),
    concurrency: int = 2,
) -> Observation:
    """The one observe step of ``plan``, ``status`` and ``reconcile``: guards on namespaces, one LIST
    per allowed namespace and kind, and the pins the workloads already carry."""
    refused = check_namespaces(desired, allowed_namespaces)
    selected = tuple(envs) or (tuple(sorted(desired.config.environments)) if desired.config else ())
    allowed = [e for e in selected if e not in refused]
    live = observe(desired, clusters, envs=allowed, concurrency=concurrency) if allowed else {}
    targets = [t for t in desired.targets if t.env in selected and (not apps or t.app in apps)]
    known = known_pins(targets, desired.config, applied_images(live))
    return Observation(envs=selected, refused=refused, live=live, known_images=known)


def annotations_for(change: Change, image: str, deploy_commit: str | None, now: datetime) -> dict[str, str]:
    target = change.target
    assert target is not None
    digest = image.split("@", 1)[1] if "@" in image else None
    cause = f"deployctl: {target.app} {target.sha[:12]} from {target.path}"
    if deploy_commit:
        cause += f" at {deploy_commit[:12]}"
    ann = {
        ANN_COMMIT: target.sha,
        ANN_IMAGE: image,
        ANN_DEPLOY_FILE: target.path,
        ANN_APPLIED_AT: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ANN_CHANGE_CAUSE: cause,
    }
    if deploy_commit:
        ann[ANN_DEPLOY_COMMIT] = deploy_commit
    if digest:
        ann[ANN_DIGEST] = digest
    return ann


@dataclass
class _AppRun:
    change: Change
    state: str = "pending"  # pending, applying, waiting, done
    audit_id: int | None = None
    recorded: bool = False  # the attempt is on record (written before the apply)
    started_at: datetime | None = None
    workloads: tuple[Workload, ...] = ()
    outcome: Outcome | None = None


class Reconciler:
    """One reconcile run over a desired state. Use :func:`reconcile` unless you need the pieces."""

    def __init__(
        self,
        desired: DesiredState,
        clusters: ClusterFor,
        *,
        envs: Sequence[str] = (),
        apps: Sequence[str] = (),
        wait: bool = True,
        timeout: float = 300.0,
        concurrency: int = 16,
        poll_interval: float = 0.5,
        audit: AuditSink | None = None,
        allowed_namespaces: Sequence[str] = (),
        images: Mapping[tuple[str, str], str] | None = None,
        refusals: Mapping[tuple[str, str], str] | None = None,
        pinner: Callable[[Sequence[Target]], PinDecisions] | None = None,
        observe_concurrency: int = 2,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.desired = desired
        self.clusters = clusters
        self.envs = tuple(envs)
        self.apps = tuple(apps)
        self.wait = wait
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.poll_interval = poll_interval
        self.audit: AuditSink = audit or NullAudit()
        self.allowed_namespaces = tuple(allowed_namespaces)
        self.images = dict(images or {})
        self.refusals = dict(refusals or {})
        self.pinner = pinner
        self.observe_concurrency = observe_concurrency
        # A sink that can write many records at once gets one durable write per wave, not per app.
        self._batches = hasattr(self.audit, "attempts_started") and hasattr(self.audit, "attempts_finished")
        self._finishes: list[tuple[_AppRun, str, str | None]] = []
        self.on_progress = on_progress or (lambda p: None)
        self.clock = clock

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> ReconcileResult:
        started = time.monotonic()
        seen = observe_selection(self.desired, self.clusters, envs=self.envs, apps=self.apps,
                                 allowed_namespaces=self.allowed_namespaces, concurrency=self.observe_concurrency)
        refused_envs = seen.refused
        self._pin(seen)
        plan = make_plan(self.desired, seen.live, envs=seen.envs, apps=self.apps, images=self.images)
        log.info("reconcile.planned", ref=plan.ref, deploy_commit=plan.deploy_commit, **plan.counts)

        runs: dict[tuple[str, str], _AppRun] = {}
        outcomes: dict[tuple[str, str], Outcome] = {}
        for change in plan.changes:
            run = _AppRun(change)
            runs[change.key] = run
            reason = refused_envs.get(change.env) or self.refusals.get(change.key)
            if reason and change.action in (Action.UPDATE, Action.DRIFT, Action.BLOCKED):
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
                if self.wait and health is not None and health.health is Health.PROGRESSING:
                    run.state = "waiting"  # e.g. left mid-rollout by an interrupted run: confirm it
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
        requests: dict[str, int] = {}
        pool_requests = getattr(self.clusters, "requests", None)
        if callable(pool_requests):
            requests = pool_requests()
        result = ReconcileResult(
            plan=plan,
            outcomes=tuple(outcomes[k] for k in sorted(outcomes)),
            requests=requests,
            seconds=time.monotonic() - started,
        )
        log.info("reconcile.finished", exit_code=result.exit_code, seconds=round(result.seconds, 3),
                 requests=requests)
        return result

    def _pin(self, seen: Observation) -> None:
        """Digest-pin the selected targets: reuse pins already applied for the same tag, resolve the rest."""
        self.images.update({k: v for k, v in seen.known_images.items() if k not in self.images})
        if self.pinner is None:
            return
        todo = [t for t in self.desired.targets
                if t.env in seen.envs and (not self.apps or t.app in self.apps) and t.key not in self.images
                and pin_mode(self.desired.config, t.app) == "digest"]
        if not todo:
            return
        decisions = self.pinner(todo)
        self.images.update(decisions.images)
        for key, reason in decisions.refusals.items():
            self.refusals.setdefault(key, reason)

    # -- execution ----------------------------------------------------------------------------

    def _execute(self, runs: dict[tuple[str, str], _AppRun]) -> None:
        order: list[tuple[str, str]] = []
        for env in sorted({k[0] for k in runs}):
            env_apps = {k[1]: runs[k].change.depends_on for k in runs if k[0] == env}
            order.extend((env, app) for app in dependency_order(env_apps))
        deadline = time.monotonic() + self.timeout
        last_poll = 0.0
        poll_every = self.poll_interval
        futures: dict[Future[tuple[Workload, ...]], tuple[str, str]] = {}
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="deployctl-apply") as pool:
            while any(r.outcome is None for r in runs.values()):
                # Start every pending app whose dependencies allow it, in dependency order.
                ready: list[_AppRun] = []
                for key in order:
                    run = runs[key]
                    if run.state != "pending" or len(futures) + len(ready) >= self.concurrency * 4:
                        continue
                    verdict = self._dependencies(run, runs)
                    if verdict == "wait":
                        continue
                    if verdict is not None:
                        self._finish(run, BLOCKED, verdict, record=True)
                        continue
                    ready.append(run)
                for run in self._record_attempts(ready):
                    futures[pool.submit(self._apply, run)] = run.change.key
                    run.state = "applying"

                done, _ = wait(list(futures), timeout=self.poll_interval, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = futures.pop(fut)
                    run = runs[key]
                    try:
                        run.workloads = fut.result()
                    except ClusterUnreachableError:
                        self._abandon(runs, futures, "the Kubernetes API became unreachable")
                        raise
                    except DeployctlError as exc:
                        self._finish(run, FAILED, f"apply failed: {exc}", record=True)
                        continue
                    if self.wait:
                        run.state = "waiting"
                        self.on_progress(Progress(run.change.env, run.change.app, "waiting", "rolling out"))
                    else:
                        self._finish(run, APPLIED, "applied; not waiting for the rollout (--no-wait)", record=True)

                waiting = [r for r in runs.values() if r.state == "waiting" and r.outcome is None]
                now = time.monotonic()
                if waiting and now - last_poll >= poll_every:
                    last_poll = now
                    try:
                        self._poll(waiting)
                        # A LIST of thousands of workloads is not free, and the API server that
                        # serves it is the one rolling them out: poll at most a quarter of the time.
                        poll_every = max(self.poll_interval, 4 * (time.monotonic() - now))
                    except ClusterUnreachableError:
                        self._abandon(runs, futures, "the Kubernetes API became unreachable")
                        raise
                if time.monotonic() > deadline:
                    for run in runs.values():
                        if run.outcome is None and run.state in ("waiting", "pending"):
                            status = combined_status(run.workloads).message if run.workloads else "not started"
                            self._finish(
                                run, FAILED, f"timed out after {self.timeout:.0f}s: {status}",
                                record=run.state == "waiting" and run.change.writes,
                            )
                if not futures and not any(r.state == "waiting" and r.outcome is None for r in runs.values()):
                    # Nothing in flight: whatever is still pending waits on something that will not come.
                    stuck = [r for r in runs.values() if r.outcome is None and r.state == "pending"]
                    if stuck and all(self._dependencies(r, runs) == "wait" for r in stuck):
                        for r in stuck:
                            self._finish(r, BLOCKED, "dependencies form a cycle or never started", record=True)
                self._flush_finishes()
        self._flush_finishes()

    def _record_attempts(self, ready: list[_AppRun]) -> list[_AppRun]:
        """Put the attempts of a wave on record before any of them is applied (one write when the
        sink can batch). Returns the runs that may be applied; an app whose attempt cannot be
        recorded is not applied."""
        if not ready:
            return []
        if not self._batches:
            return ready  # each attempt is recorded by its own apply
        items = [(run.change, self._image(run.change)) for run in ready]
        try:
            ids = self.audit.attempts_started(items, deploy_commit=self.desired.commit)  # type: ignore[attr-defined]
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
        """Write the queued outcomes in one durable write."""
        if not self._finishes:
            return
        queued, self._finishes = self._finishes, []
        try:
            self.audit.attempts_finished(  # type: ignore[attr-defined]
                [(run.audit_id, result, error) for run, result, error in queued])
        except DeployctlError as exc:
            for run, result, _ in queued:
                log.error("audit.write_failed", env=run.change.env, app=run.change.app, result=result,
                          error=str(exc))
                if run.outcome is not None:
                    run.outcome = replace(run.outcome,
                                          message=f"{run.outcome.message} (audit record not written: {exc})")

    @staticmethod
    def _image(change: Change) -> str:
        return change.desired_image or (change.target.image if change.target else "")

    def _dependencies(self, run: _AppRun, runs: Mapping[tuple[str, str], _AppRun]) -> str | None:
        """None when the app may start, "wait" while a dependency is in flight, else why it is blocked."""
        for dep in run.change.depends_on:
            dep_run = runs.get((run.change.env, dep))
            if dep_run is None:
                continue
            outcome = dep_run.outcome
            if outcome is None:
                return "wait"
            if outcome.result in (SUCCEEDED, DRIFT_CORRECTED, APPLIED):
                continue
            if outcome.result == IN_SYNC and outcome.healthy is not False:
                continue
            detail = f": {outcome.message}" if outcome.message else ""
            return f"dependency {dep} {outcome.result}{detail}"
        return None

    def _apply(self, run: _AppRun) -> tuple[Workload, ...]:
        change = run.change
        image = self._image(change)
        if not run.recorded:
            run.started_at = self.clock()
            run.audit_id = self.audit.attempt_started(change, image=image, deploy_commit=self.desired.commit)
            run.recorded = True
        self.on_progress(Progress(change.env, change.app, "applying", f"{change.old_sha or '-'} -> {image}"))
        log.info("apply.started", env=change.env, app=change.app, image=image, action=str(change.action))
        annotations = annotations_for(change, image, self.desired.commit, run.started_at or self.clock())
        assert change.target is not None
        cluster = self.clusters(change.target.context)
        applied = []
        for w in change.workloads:
            applied.append(cluster.apply_image(w, container=change.target.container, image=image,
                                               annotations=annotations))
        return tuple(applied)

    def _poll(self, waiting: list[_AppRun]) -> None:
        by_ns: dict[tuple[str | None, str], list[_AppRun]] = {}
        for run in waiting:
            ctx = run.change.target.context if run.change.target else None
            by_ns.setdefault((ctx, run.change.namespace), []).append(run)
        for (ctx, namespace), runs in by_ns.items():
            cluster = self.clusters(ctx)
            kinds = sorted({w.kind for run in runs for w in run.workloads})
            current = {(w.kind, w.name): w for kind in kinds for w in cluster.list_kind(namespace, kind)}
            for run in runs:
                fresh = tuple(current.get((w.kind, w.name), w) for w in run.workloads)
                # A status computed before our apply was observed must not count.
                fresh = tuple(
                    f if f.generation >= w.generation else w for f, w in zip(fresh, run.workloads, strict=True)
                )
                run.workloads = fresh
                status = combined_status(fresh)
                if status.health is Health.HEALTHY:
                    if not run.change.writes:
                        result = IN_SYNC
                    elif run.change.action is Action.DRIFT:
                        result = DRIFT_CORRECTED
                    else:
                        result = SUCCEEDED
                    self._finish(run, result, status.message, record=run.change.writes)
                elif status.health is Health.FAILED:
                    reasons = self._pod_reasons(cluster, fresh)
                    message = status.message + (f" (pods: {reasons})" if reasons else "")
                    self._finish(run, FAILED, message, record=run.change.writes)

    @staticmethod
    def _pod_reasons(cluster: Cluster, workloads: Iterable[Workload]) -> str:
        reasons: list[str] = []
        for w in workloads:
            try:
                reasons.extend(f"{p.pod}: {p.reason}" for p in cluster.pod_problems(w, limit=2))
            except ClusterError:
                continue
        return "; ".join(reasons)

    def _abandon(self, runs: Mapping[tuple[str, str], _AppRun], futures: Mapping[Future[tuple[Workload, ...]],
                 tuple[str, str]], why: str) -> None:
        for fut in futures:
            fut.cancel()
        self._flush_finishes()
        for run in runs.values():
            if run.outcome is None and run.audit_id is not None:
                self.audit.attempt_finished(run.audit_id, result=FAILED, error=why)

    def _finish(self, run: _AppRun, result: str, message: str, *, record: bool,
                healthy: bool | None = None) -> None:
        change = run.change
        now = self.clock()
        audit_id = run.audit_id
        audit_result = {APPLIED: SUCCEEDED}.get(result, result)
        error = None if result in (SUCCEEDED, DRIFT_CORRECTED, APPLIED) else message
        if record and self._batches and audit_id is not None:
            self._finishes.append((run, audit_result, error))  # written by _flush_finishes, this wave
        elif record:
            image = self._image(change)
            try:
                if audit_id is None:
                    audit_id = self.audit.attempt_started(change, image=image, deploy_commit=self.desired.commit)
                self.audit.attempt_finished(audit_id, result=audit_result, error=error)
            except DeployctlError as exc:
                # The outcome stands; the record of it could not be written (the next run closes
                # an open attempt as interrupted). Say so loudly rather than lose the result.
                log.error("audit.write_failed", env=change.env, app=change.app, result=result, error=str(exc))
                message = f"{message} (audit record not written: {exc})"
        run.state = "done"
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
        if result in (FAILED, BLOCKED, REFUSED, INVALID, MISSING):
            log.warning("app.outcome", env=change.env, app=change.app, result=result, message=message,
                        sha=change.new_sha)
        elif result != IN_SYNC:  # thousands of in-sync apps are one reconcile.finished event, not a log line each
            log.info("app.outcome", env=change.env, app=change.app, result=result, message=message,
                     sha=change.new_sha)
        self.on_progress(Progress(change.env, change.app, result, message))


def applied_images(live: Mapping[str, Sequence[Workload]]) -> dict[tuple[str, str], set[str | None]]:
    """(namespace, app) -> the images deployctl last applied to its workloads (annotation)."""
    out: dict[tuple[str, str], set[str | None]] = {}
    for workloads in live.values():
        for w in workloads:
            out.setdefault((w.namespace, w.app), set()).add(w.annotations.get(ANN_IMAGE))
    return out


def reconcile(desired: DesiredState, clusters: ClusterFor, **options: object) -> ReconcileResult:
    """Run one reconcile; see :class:`Reconciler` for the options."""
    return Reconciler(desired, clusters, **options).run()  # type: ignore[arg-type]

