"""One reconcile run composed from its parts, the same for the CLI and the controller:
desired state -> policy (gates, approvals, freezes) -> digest pins -> the open attempts of the run's environments
whose lock holder is gone, closed as interrupted (:mod:`~deployctl.reconcile.abandoned`) -> then per environment:
reconcile, where each app that is written is written under its lock (taken only then; the attempts of runs
that lost it are closed as interrupted). The outer run (guards, records) is here; the inner one (observe,
lock, apply, wait) is the reconciler's. Its caller builds one
:class:`Run` (clusters, locks, the audit sink as the caller wraps it, options, callbacks) and hands it down."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from deployctl.edges.audit import url as audit_location
from deployctl.edges.git.repo import local_sources, read_desired_state
from deployctl.edges.kube.locks import LeaseLocks
from deployctl.errors import ClusterUnreachableError, DeployctlError
from deployctl.model.audit import AuditStore, current_actor
from deployctl.model.audit_target import AUDIT_DEFAULT, AuditTarget
from deployctl.model.state import DesiredState
from deployctl.model.vocabulary import EnvStatus, Trigger
from deployctl.reconcile import policy
from deployctl.reconcile.abandoned import close_abandoned
from deployctl.reconcile.artifacts import registry_pinner
from deployctl.reconcile.observe import ClusterPool
from deployctl.reconcile.options import ReconcileOptions
from deployctl.reconcile.ordering import git_relation
from deployctl.reconcile.outcome import EnvironmentOutcome, Progress, ReconcileResult
from deployctl.reconcile.ports import Clusters, Locks
from deployctl.reconcile.reconciler import Prepared, Reconciler
from deployctl.reconcile.recorder import AuditRecorder
from deployctl.reconcile.runstate import AppLocking
from deployctl.reconcile.sink import AuditSink, OverrideNotes, ReviewNotes, RunAudit
from deployctl.rules.plan import Plan, count_actions

log = structlog.get_logger(__name__)


def lock_identity() -> str:
    """This run's name in the app locks: the CI job (else user), host, pid and a run id."""
    actor = current_actor()
    who = actor.ci_job or actor.user
    return f"{who}@{actor.host}/{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Callbacks:
    """What a run tells its caller while it goes."""

    on_read: Callable[[DesiredState], None] | None = None  # the desired state once read (e.g. print its problems)
    on_progress: Callable[[Progress], None] | None = None  # each env/app's state changes
    on_wait: Callable[[str], None] | None = None  # a line while an app's lock is held by another run


@dataclass(frozen=True)
class Run:
    """Everything one reconcile carries besides the desired state, built once by its caller (the CLI's
    :func:`run_reconcile`, the controller) and handed down unchanged."""

    clusters: Clusters
    locks: Locks
    options: ReconcileOptions
    repo_path: str | Path  # the deploy repo's clone: gates, approvals and ordering read its history
    audit: RunAudit | None = None  # the audit sink, already wrapped by the caller (None: no audit history)
    store: AuditStore | None = None  # the audit history that digest pins (and gates) are checked against
    gates_from_audit: bool = True  # False: promotion gates are checked against git history, not ``store``
    identity: str = field(default_factory=lock_identity)  # this run's name in the app locks
    close_interrupted: bool = True  # once a lock is taken: close the open attempts of its earlier holders
    refusals: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (env, app) -> why, on top of the policy's
    callbacks: Callbacks = field(default_factory=Callbacks)


def audit_recorder(desired: DesiredState, store: AuditStore, *, repo_path: str | Path, trigger: str,
                   identity: str) -> AuditRecorder:
    """The recorder of one run of ``desired`` into ``store``, its attempts held under ``identity``'s locks."""
    return AuditRecorder(store, repo_path=repo_path, trigger=trigger,
                         sources=local_sources(repo_path, desired.config), lock_holder=identity)


def run_once(desired: DesiredState, run: Run) -> ReconcileResult:
    """Reconcile ``desired`` once, as ``run`` says.

    Each selected environment is reconciled on its own (in parallel), under its lock: an unreachable
    cluster fails that environment only.
    """
    started = time.monotonic()
    options = run.options
    said = policy.for_reconcile(desired, repo=run.repo_path, store=run.store if run.gates_from_audit else None,
                                override_freeze=options.overrides.override_freeze,
                                reason=options.overrides.override_reason, verification_store=run.store)
    sink: AuditSink | None = run.audit
    if sink is not None and said.notes:
        sink = OverrideNotes(sink, said.notes)
    if sink is not None and said.reviews:
        sink = ReviewNotes(sink, said.reviews)
    envs = _Environments(desired, run, sink=sink, refusals={**said.refusals, **run.refusals})
    groups = _groups(desired, options)
    if run.audit is not None and envs.locking is not None:  # attempts killed runs left open, whatever they wrote
        close_abandoned(run.audit, envs.locking, _contexts(desired, groups))
    if len(groups) <= 1:
        results = [envs.reconcile(g) for g in groups]
    else:
        with ThreadPoolExecutor(max_workers=min(len(groups), 16), thread_name_prefix="deployctl-env") as pool:
            results = list(pool.map(envs.reconcile, groups))
    return _merge(desired, results, requests=run.clusters.requests(), seconds=time.monotonic() - started,
                  options=options)


class _Environments:
    """The part of a run each environment shares: the policy's refusals, digest pins, git ancestry."""

    def __init__(self, desired: DesiredState, run: Run, *, sink: AuditSink | None,
                 refusals: Mapping[tuple[str, str], str]) -> None:
        self.desired = desired
        self.run = run
        self.sink = sink
        audit = run.audit
        self.locking = AppLocking(
            locks=run.locks, identity=run.identity, lease=run.options.locking.lease,
            max_held=run.options.locking.max_held, timeout=run.options.lock_timeout, on_wait=run.callbacks.on_wait,
            close_interrupted=(lambda env, apps: audit.close_interrupted(env=env, apps=apps))
            if audit is not None and run.close_interrupted else None,
        ) if run.options.locking.enabled else None
        self.prepared = Prepared(
            refusals=refusals, relation=git_relation(run.repo_path),
            pinner=registry_pinner(desired, run.store, allow_retagged=run.options.overrides.allow_retagged),
        )

    def reconcile(self, envs: tuple[str, ...]) -> ReconcileResult:
        """Reconcile one environment (or the unknown names, as one group), each app it writes under its lock."""
        desired, run = self.desired, self.run
        env = envs[0] if len(envs) == 1 else None
        env_config = desired.config.environments.get(env) if desired.config and env else None
        context = env_config.context if env_config else None
        try:
            result = Reconciler(desired, run.clusters, run.options.for_envs(envs), audit=self.sink,
                                prepared=self.prepared, on_progress=run.callbacks.on_progress,
                                locking=self.locking).run()
            return replace(result, environments=tuple(_env_outcome(desired, e, context) for e in envs))
        except ClusterUnreachableError as exc:
            named = run.clusters.context_name(context) or "in-cluster"
            message = f"environment {env} (context {named}, server {_server(run.clusters, context)}) is unreachable: {exc}"
            log.error("environment.unreachable", env=env, context=context, error=str(exc))
            return _empty(desired, EnvironmentOutcome(env or "-", EnvStatus.UNREACHABLE, message, context))
        except DeployctlError as exc:
            log.error("environment.failed", env=env, context=context, error=str(exc))
            return _empty(desired, EnvironmentOutcome(env or "-", EnvStatus.FAILED, f"environment {env}: {exc}", context))


def _groups(desired: DesiredState, options: ReconcileOptions) -> list[tuple[str, ...]]:
    """One group per selected environment of the config; names the config does not know (asked for, or
    with deploy files that are invalid for it) go in one group, reported there as invalid."""
    known = desired.config.environments if desired.config else {}
    selected = tuple(options.selection.envs) or desired.named_environments()
    groups: list[tuple[str, ...]] = [(e,) for e in selected if e in known]
    unknown = tuple(e for e in selected if e not in known)
    if unknown or not groups:
        groups.append(unknown or tuple(options.selection.envs))
    return groups


def _contexts(desired: DesiredState, groups: list[tuple[str, ...]]) -> dict[str, str | None]:
    """The run's environments the config knows, each with its ``context:``."""
    known = desired.config.environments if desired.config else {}
    return {env: known[env].context for group in groups for env in group if env in known}


def _server(clusters: Clusters, context: str | None) -> str:
    try:
        return clusters(context).server
    except DeployctlError:
        return "unknown"


def _empty(desired: DesiredState, env: EnvironmentOutcome) -> ReconcileResult:
    return ReconcileResult(plan=Plan(changes=(), deploy_commit=desired.commit, ref=desired.ref), outcomes=(),
                           environments=(env,))


def _env_outcome(desired: DesiredState, env: str, context: str | None) -> EnvironmentOutcome:
    """An environment reconciled: ok, or invalid when deployctl.yaml has no usable entry for it."""
    config = desired.config
    if config is not None and env in config.environments:
        return EnvironmentOutcome(env, EnvStatus.OK, context=context)
    if config is None:
        why = "deployctl.yaml could not be read; nothing applied there"
    elif env in config.invalid_environments:
        why = f"its entry in {config.path} has errors; nothing applied there"
    else:
        why = f"it has no entry under environments: in {config.path}"
    return EnvironmentOutcome(env, EnvStatus.INVALID, f"environment {env}: {why}", context)


def _merge(desired: DesiredState, results: list[ReconcileResult], *, requests: Mapping[str, int],
           seconds: float, options: ReconcileOptions) -> ReconcileResult:
    changes = tuple(sorted((c for r in results for c in r.plan.changes), key=lambda c: c.key))
    plan = Plan(changes=changes, deploy_commit=desired.commit, ref=desired.ref, counts=count_actions(changes))
    return ReconcileResult(
        plan=plan, outcomes=tuple(sorted((o for r in results for o in r.outcomes), key=lambda o: o.key)),
        requests=dict(requests), seconds=seconds,
        environments=tuple(sorted((e for r in results for e in r.environments), key=lambda e: e.env)),
        problems=desired.unrowed_errors(options.selection.envs, options.selection.apps),
    )


def run_reconcile(
    *,
    repo: str,
    ref: str = "HEAD",
    options: ReconcileOptions | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    audit: AuditTarget = AUDIT_DEFAULT,
    trigger: str = Trigger.MANUAL,
    callbacks: Callbacks | None = None,
) -> ReconcileResult:
    """The reconcile command without click: read ``repo`` at ``ref``, reconcile, record.

    ``audit`` says where the run is recorded (:data:`AUDIT_OFF`: nowhere; the default store is not evidence
    for a promotion gate: gates then read git history).
    """
    callbacks = callbacks or Callbacks()
    desired = read_desired_state(repo, ref=ref)
    if callbacks.on_read is not None:
        callbacks.on_read(desired)
    store = audit_location.open_target(audit)
    try:
        pool = ClusterPool(kubeconfig=kubeconfig, context=context)
        identity = lock_identity()
        recorder = audit_recorder(desired, store, repo_path=repo, trigger=trigger, identity=identity) \
            if store is not None else None
        return run_once(desired, Run(
            clusters=pool, locks=LeaseLocks(pool), options=options or ReconcileOptions(), repo_path=repo,
            audit=recorder, store=store, gates_from_audit=audit.named, identity=identity, callbacks=callbacks,
        ))
    finally:
        if store is not None:
            store.close()
