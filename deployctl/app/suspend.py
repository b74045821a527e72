"""Suspend and resume: tell reconcile and watch to leave an app's workloads alone, on record.

``deployctl suspend`` annotates every managed workload of the selected env/apps with
``deployctl.dev/suspended`` (who, when, why); the plan then gives them the ``suspended`` action and
reconcile skips them with a visible line. ``resume`` removes the annotations. Each change is one
audit attempt with the result ``suspended`` or ``resumed`` (the reason in its message), written
only after the cluster took the change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from deployctl.edges.kube.cluster import Cluster
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.audit import Actor, Attempt, AuditStore
from deployctl.model.state import DesiredState
from deployctl.model.vocabulary import Result, Trigger
from deployctl.model.workload import (
    ANN_COMMIT,
    ANN_SUSPENDED,
    ANN_SUSPENDED_AT,
    ANN_SUSPENDED_BY,
    ANN_SUSPENDED_REASON,
    SUSPENSION_ANNOTATIONS,
    Workload,
    suspension,
)
from deployctl.reconcile.observe import check_namespaces
from deployctl.rules.promote import deploy_path

SUSPENDED, RESUMED = Result.SUSPENDED, Result.RESUMED


@dataclass(frozen=True)
class SuspendResult:
    """What suspend or resume did to one env/app."""

    env: str
    app: str
    namespace: str
    workloads: tuple[str, ...]
    result: str  # suspended | resumed
    changed: bool  # False: it already was in that state (nothing written, nothing recorded)
    reason: str
    by: str
    audit_id: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {"env": self.env, "app": self.app, "namespace": self.namespace, "workloads": list(self.workloads),
                "result": self.result, "changed": self.changed, "reason": self.reason, "by": self.by,
                "audit_id": self.audit_id}


@dataclass(frozen=True)
class SuspendRequest:
    """Suspend (or resume), who asks, when and why: one value for every env/app it concerns."""

    suspend: bool  # False: resume
    reason: str
    actor: Actor
    now: datetime
    trigger: str = Trigger.MANUAL

    @property
    def result(self) -> str:
        return SUSPENDED if self.suspend else RESUMED

    @property
    def by(self) -> str:
        return _who(self.actor)


def _who(actor: Actor) -> str:
    return f"{actor.user}@{actor.host}" + (f" ({actor.ci_job})" if actor.ci_job else "")


def set_suspended(
    desired: DesiredState,
    clusters: Callable[[str | None], Cluster],
    request: SuspendRequest,
    *,
    envs: Sequence[str],
    apps: Sequence[str] = (),
    store: AuditStore | None = None,
    allowed_namespaces: Sequence[str] = (),
) -> list[SuspendResult]:
    """Suspend (or resume, as ``request`` says) the managed workloads of ``apps`` (all when empty) in ``envs``."""
    config = desired.config
    if config is None:
        raise InvalidInputError("deployctl.yaml is missing or invalid; run deployctl validate")
    broken = [e for e in envs if e in config.invalid_environments]
    if broken:
        raise InvalidInputError(f"environment {', '.join(map(repr, broken))} has errors in {config.path}; "
                                "fix those first (deployctl validate)")
    unknown = [e for e in envs if e not in config.environments]
    if unknown:
        raise InvalidInputError(f"unknown environment {', '.join(map(repr, unknown))}; "
                                f"deployctl.yaml has {', '.join(sorted(config.environments)) or 'none'}")
    refused = check_namespaces(desired, allowed_namespaces)
    for env in envs:
        if env in refused:
            raise InvalidInputError(refused[env])
    results: list[SuspendResult] = []
    for env in envs:
        env_config = config.environments[env]
        cluster = clusters(env_config.context)
        by_app: dict[str, list[Workload]] = {}
        for w in cluster.list_workloads(env_config.namespace):
            if not apps or w.app in apps:
                by_app.setdefault(w.app, []).append(w)
        missing = [a for a in apps if a not in by_app]
        if missing:
            raise InvalidInputError(
                f"no workload in namespace {env_config.namespace} is labelled deployctl.dev/app="
                f"{missing[0]}; nothing to {'suspend' if request.suspend else 'resume'}")
        for app in sorted(by_app):
            workloads = by_app[app]
            results.append(_one(cluster, env, app, env_config.namespace, workloads, request=request, store=store,
                                deploy_commit=desired.commit))
    return results


def _one(cluster: Cluster, env: str, app: str, namespace: str, workloads: list[Workload], *,
         request: SuspendRequest, store: AuditStore | None, deploy_commit: str | None) -> SuspendResult:
    suspend, reason, by = request.suspend, request.reason, request.by
    result = request.result
    refs = tuple(f"{w.namespace}/{w.ref}" for w in workloads)
    current = suspension(workloads)
    to_change = [w for w in workloads if (w.annotations.get(ANN_SUSPENDED) == "true") != suspend]
    if not to_change:
        shown = current.reason if current is not None else reason
        return SuspendResult(env, app, namespace, refs, result, False, shown, current.by if current else by)
    annotations: dict[str, str | None] = (
        {ANN_SUSPENDED: "true", ANN_SUSPENDED_BY: by, ANN_SUSPENDED_REASON: reason,
         ANN_SUSPENDED_AT: request.now.isoformat(timespec="seconds")}
        if suspend else dict.fromkeys(SUSPENSION_ANNOTATIONS)
    )
    shas = {w.annotations.get(ANN_COMMIT) for w in workloads}
    sha = next(iter(shas)) if len(shas) == 1 else None
    audit_id = None
    if store is not None:
        image = next(iter(workloads[0].images.values()), "")
        audit_id = store.start(Attempt(
            env=env, app=app, namespace=namespace, workloads=refs, previous_sha=sha, new_sha=sha or "",
            image=image, digest=None, deploy_commit=deploy_commit, deploy_file=deploy_path(env, app),
            file_commit=None, file_author=None, file_committer=None, file_commit_time=None,
            file_commit_summary=None, reviewers=(), app_commit_summary=None, trigger=request.trigger,
            actor=request.actor, started_at=request.now,
        ))
    try:
        for w in to_change:
            cluster.annotate(w, annotations)
    except DeployctlError as exc:
        if store is not None and audit_id is not None:
            store.finish(audit_id, result=Result.FAILED, error=f"{'suspend' if suspend else 'resume'} failed: {exc}")
        raise
    if store is not None and audit_id is not None:
        store.finish(audit_id, result=result, error=f"{result} by {by}: {reason}")
    return SuspendResult(env, app, namespace, refs, result, True, reason, by, audit_id)
