"""One reconcile run composed from its parts, the same for the CLI and the controller:
desired state -> audit recorder -> policy (gates, approvals, freezes) -> digest pins -> then per environment,
each on its own: take its lock -> close attempts of runs that lost it (interrupted) -> reconcile. The outer run
(guards, locks, records) is here; the inner one (observe, apply, wait) is the reconciler's."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import structlog

from deployctl.edges.audit import url as audit_location
from deployctl.edges.git.repo import local_sources, read_desired_state
from deployctl.edges.kube.cluster import Cluster, ClusterError
from deployctl.edges.kube.lease import EnvironmentLock, LockHolder, printable
from deployctl.errors import ClusterUnreachableError, DeployctlError
from deployctl.model.audit import AuditStore, current_actor
from deployctl.model.state import DesiredState
from deployctl.reconcile import policy
from deployctl.reconcile.artifacts import registry_pinner
from deployctl.reconcile.observe import ClusterFor, ClusterPool, check_namespaces, context_namer
from deployctl.reconcile.options import ReconcileOptions
from deployctl.reconcile.ordering import git_relation
from deployctl.reconcile.outcome import EnvironmentOutcome, Progress, ReconcileResult
from deployctl.reconcile.reconciler import Reconciler
from deployctl.reconcile.recorder import AuditRecorder
from deployctl.reconcile.sink import AuditSink
from deployctl.rules.plan import Plan

log = structlog.get_logger(__name__)


class LockLostError(DeployctlError):
    """The run stopped renewing its environment's lock in time: another run may act there now."""

    exit_code = 1


def lock_identity() -> str:
    """This run's name in the environment locks: the CI job (else user), host, pid and a run id."""
    actor = current_actor()
    who = actor.ci_job or actor.user
    return f"{who}@{actor.host}/{os.getpid()}-{uuid.uuid4().hex[:6]}"


def run_once(
    desired: DesiredState,
    clusters: ClusterFor,
    *,
    repo_path: str | Path,
    options: ReconcileOptions,
    store: AuditStore | None,
    trigger: str,
    close_interrupted: bool = True,
    gates_from_audit: bool = True,
    guard_sink: Callable[[AuditSink], AuditSink] | None = None,
    refusals: Mapping[tuple[str, str], str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    identity: str | None = None,
) -> ReconcileResult:
    """Reconcile ``desired`` once, recording into ``store`` (None: no audit history).

    Each selected environment is reconciled on its own (in parallel), under its lock: an unreachable
    cluster fails that environment only. ``gates_from_audit=False`` checks promotion gates against the
    deploy files' git history instead of the store; ``guard_sink`` wraps the recorder (the controller's
    stop-aware wrapper); ``refusals`` are extra (env, app) -> reason refusals on top of the policy's;
    ``on_wait`` gets a line while an environment's lock is held by another run; ``identity`` names this
    run in the locks (default: :func:`lock_identity`).
    """
    started = time.monotonic()
    identity = identity or lock_identity()
    sink: AuditSink | None = None
    recorder: AuditRecorder | None = None
    if store is not None:
        recorder = AuditRecorder(store, repo_path=repo_path, trigger=trigger,
                                 sources=local_sources(repo_path, desired.config), lock_holder=identity)
        sink = guard_sink(recorder) if guard_sink is not None else recorder
    refused, sink = policy.for_reconcile(
        desired, repo=repo_path, store=store if gates_from_audit else None, sink=sink, override_freeze=options.override_freeze,
        reason=options.override_reason, extra=refusals, verification_store=store,
    )
    pinner = registry_pinner(desired, store, allow_retagged=options.allow_retagged)

    relation = git_relation(repo_path)

    def reconcile_env(envs: tuple[str, ...]) -> ReconcileResult:
        env = envs[0] if len(envs) == 1 else None
        env_config = desired.config.environments.get(env) if desired.config and env else None
        context = env_config.context if env_config else None
        lock: EnvironmentLock | None = None
        try:
            if env_config is not None and options.lock and env not in guarded:
                lock = _take_lock(clusters, context, env or "", env_config.namespace, identity, options, on_wait)
                if lock is not None and recorder is not None and close_interrupted:
                    recorder.close_interrupted(env=env)
            result = Reconciler(desired, _Locked(clusters, lock, env), replace(options, envs=envs), audit=sink,
                                refusals=refused, pinner=pinner, on_progress=on_progress, relation=relation).run()
            return replace(result, environments=tuple(EnvironmentOutcome(e, "ok", context=context) for e in envs))
        except ClusterUnreachableError as exc:
            named = context_namer(clusters)(context) or "in-cluster"
            message = f"environment {env} (context {named}, server {_server(clusters, context)}) is unreachable: {exc}"
            log.error("environment.unreachable", env=env, context=context, error=str(exc))
            return _empty(desired, EnvironmentOutcome(env or "-", "unreachable", message, context))
        except DeployctlError as exc:
            log.error("environment.failed", env=env, context=context, error=str(exc))
            return _empty(desired, EnvironmentOutcome(env or "-", "failed", f"environment {env}: {exc}", context))
        finally:
            if lock is not None:
                lock.release()

    guarded = check_namespaces(desired, options.allowed_namespaces, context_name=context_namer(clusters))
    groups = _groups(desired, options)
    if len(groups) <= 1:
        results = [reconcile_env(g) for g in groups]
    else:
        with ThreadPoolExecutor(max_workers=min(len(groups), 16), thread_name_prefix="deployctl-env") as pool:
            results = list(pool.map(reconcile_env, groups))
    pool_requests = getattr(clusters, "requests", None)
    return _merge(desired, results, requests=pool_requests() if callable(pool_requests) else {},
                  seconds=time.monotonic() - started)


def _groups(desired: DesiredState, options: ReconcileOptions) -> list[tuple[str, ...]]:
    """One group per selected environment of the config; names the config does not know go in one group."""
    known = desired.config.environments if desired.config else {}
    selected = tuple(options.envs) or tuple(sorted(known))
    groups: list[tuple[str, ...]] = [(e,) for e in selected if e in known]
    unknown = tuple(e for e in selected if e not in known)
    if unknown or not groups:
        groups.append(unknown or tuple(options.envs))
    return groups


def _take_lock(clusters: ClusterFor, context: str | None, env: str, namespace: str, identity: str,
               options: ReconcileOptions, on_wait: Callable[[str], None] | None) -> EnvironmentLock | None:
    """Take ``env``'s lock (None when its namespace does not exist: there is nothing to write there).
    While waiting, ``clusters`` is asked for the cluster again before each try: the controller's refuses
    (raises) once it must stop acting, which ends the wait."""
    lock = EnvironmentLock(clusters(context), namespace=namespace, identity=identity,
                           lease_duration=options.lock_lease)

    def waiting(holder: LockHolder) -> None:
        since = printable((holder.since or "")[11:19]) or "?"
        line = f"waiting for {env}: held by {printable(holder.identity or '')} since {since}"
        log.info("lock.waiting", env=env, holder=holder.identity, since=holder.since)
        if on_wait is not None:
            on_wait(line)

    timeout = options.lock_timeout if options.lock_timeout is not None else options.timeout
    try:
        lock.acquire(timeout=timeout, on_wait=waiting, between=lambda: clusters(context))
    except ClusterError as exc:
        if exc.status == 404:
            return None
        if exc.status == 403:
            raise ClusterError(f"{exc}; the environment lock needs create on leases and get/update on the Lease "
                               f"deployctl-lock in namespace {namespace} (deploy/rbac-managed-namespace.yaml)",
                               status=403) from exc
        raise
    log.info("lock.acquired", env=env, namespace=namespace, identity=identity)
    return lock


class _Locked:
    """The clusters of one environment's run, refused once its lock is no longer renewed."""

    def __init__(self, clusters: ClusterFor, lock: EnvironmentLock | None, env: str | None) -> None:
        self.clusters = clusters
        self.lock = lock
        self.env = env
        self.pool = clusters if isinstance(clusters, ClusterPool) else getattr(clusters, "pool", None)

    def __call__(self, context: str | None) -> Cluster:
        if self.lock is not None and not self.lock.held():
            raise LockLostError(f"the lock of environment {self.env} could not be renewed in time; stopped "
                                "acting there (another run may hold it now)")
        return self.clusters(context)


def _server(clusters: ClusterFor, context: str | None) -> str:
    try:
        return clusters(context).server
    except DeployctlError:
        return "unknown"


def _empty(desired: DesiredState, env: EnvironmentOutcome) -> ReconcileResult:
    return ReconcileResult(plan=Plan(changes=(), deploy_commit=desired.commit, ref=desired.ref), outcomes=(),
                           environments=(env,))


def _merge(desired: DesiredState, results: list[ReconcileResult], *, requests: Mapping[str, int],
           seconds: float) -> ReconcileResult:
    changes = tuple(sorted((c for r in results for c in r.plan.changes), key=lambda c: c.key))
    counts: dict[str, int] = {}
    for c in changes:
        counts[str(c.action)] = counts.get(str(c.action), 0) + 1
    plan = Plan(changes=changes, deploy_commit=desired.commit, ref=desired.ref, counts=counts)
    return ReconcileResult(
        plan=plan, outcomes=tuple(sorted((o for r in results for o in r.outcomes), key=lambda o: o.key)),
        requests=dict(requests), seconds=seconds,
        environments=tuple(sorted((e for r in results for e in r.environments), key=lambda e: e.env)),
    )


def run_reconcile(
    *,
    repo: str,
    ref: str = "HEAD",
    options: ReconcileOptions | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    audit_url: str | None = "",
    trigger: str = "manual",
    refusals: Mapping[tuple[str, str], str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    desired: DesiredState | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> ReconcileResult:
    """The reconcile command without click: read ``repo`` at ``ref``, reconcile, record.

    ``audit_url=None`` disables the audit history; ``""`` means the default store. ``desired`` skips the
    read when the caller has already read the repo (to print its problems first).
    """
    desired = desired if desired is not None else read_desired_state(repo, ref=ref)
    store = audit_location.open_store(audit_url or None) if audit_url is not None else None
    try:
        return run_once(
            desired, ClusterPool(kubeconfig=kubeconfig, context=context), repo_path=repo,
            options=options or ReconcileOptions(), store=store, trigger=trigger, refusals=refusals,
            gates_from_audit=bool(audit_url),  # the default local store is not evidence for a gate
            on_progress=on_progress, on_wait=on_wait,
        )
    finally:
        if store is not None:
            store.close()
