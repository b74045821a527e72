"""Workloads as deployctl sees them, and their rollout health. Pure: no I/O.

A :class:`Workload` is built from the JSON of a Deployment, StatefulSet, DaemonSet or CronJob by
the cluster edge; :func:`rollout_status` decides, like ``kubectl rollout status``, whether its
rollout is complete, still progressing, or failed. Where the outcome is already known (a paused
Deployment, ``ProgressDeadlineExceeded``, an ``OnDelete`` update strategy) it fails at once with
the reason instead of waiting out a timeout. A CronJob has no rollout: once applied it is in sync.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

APP_LABEL = "deployctl.dev/app"
HOOK_LABEL = "deployctl.dev/hook"  # "pre-deploy": a Job template of the app (docs/config.md), never a workload
PRE_DEPLOY_HOOK = "pre-deploy"
WORKLOAD_SELECTOR = f"{APP_LABEL},!{HOOK_LABEL}"
"""The label selector of managed workloads: labelled with their app, and not a hook's template."""
ANNOTATION_PREFIX = "deployctl.dev/"
ANN_COMMIT = "deployctl.dev/commit"
ANN_IMAGE = "deployctl.dev/image"
ANN_DEPLOY_COMMIT = "deployctl.dev/deploy-commit"
ANN_DEPLOY_FILE = "deployctl.dev/deploy-file"
ANN_APPLIED_AT = "deployctl.dev/applied-at"
ANN_DIGEST = "deployctl.dev/digest"
ANN_CHANGE_CAUSE = "kubernetes.io/change-cause"
# `deployctl suspend`: reconcile and watch leave a workload carrying ANN_SUSPENDED alone.
ANN_SUSPENDED = "deployctl.dev/suspended"  # "true"
ANN_SUSPENDED_BY = "deployctl.dev/suspended-by"
ANN_SUSPENDED_REASON = "deployctl.dev/suspended-reason"
ANN_SUSPENDED_AT = "deployctl.dev/suspended-at"
SUSPENSION_ANNOTATIONS = (ANN_SUSPENDED, ANN_SUSPENDED_BY, ANN_SUSPENDED_REASON, ANN_SUSPENDED_AT)

KINDS = ("Deployment", "StatefulSet", "DaemonSet", "CronJob")
"""The workload kinds deployctl manages when they carry ``deployctl.dev/app``."""
ROLLOUT_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
"""The kinds whose rollout is waited for (a CronJob's next Job simply uses the new image)."""
KINDS_TEXT = "Deployment, StatefulSet, DaemonSet or CronJob"


class Health(str, Enum):
    """Rollout health, in the Ready True/False/Unknown spirit of Flux."""

    HEALTHY = "healthy"
    PROGRESSING = "progressing"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RolloutStatus:
    health: Health
    message: str


@dataclass(frozen=True)
class Workload:
    """One labelled Deployment, StatefulSet, DaemonSet or CronJob.

    For a DaemonSet the replica counts are its scheduled-pod counts: ``replicas`` is
    ``desiredNumberScheduled``, ``updated_replicas`` ``updatedNumberScheduled``,
    ``available_replicas`` ``numberAvailable``, ``ready_replicas`` ``numberReady``."""

    kind: str
    namespace: str
    name: str
    app: str
    images: Mapping[str, str]  # container name -> image
    annotations: Mapping[str, str]
    generation: int
    observed_generation: int
    replicas: int  # desired (spec)
    status_replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    conditions: tuple[Mapping[str, Any], ...] = ()
    current_revision: str | None = None
    update_revision: str | None = None
    partition: int = 0
    selector: Mapping[str, str] = field(default_factory=dict)
    paused: bool = False  # Deployment spec.paused
    strategy: str = ""  # the update strategy type (RollingUpdate, OnDelete, Recreate)
    resource_version: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], kind: str) -> Workload:
        """Build from a workload of one of :data:`KINDS` as returned by the API (JSON)."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        pod_spec = spec.get("jobTemplate", {}).get("spec", {}) if kind == "CronJob" else spec
        containers = ((pod_spec.get("template") or {}).get("spec") or {}).get("containers") or []
        update = spec.get("strategy" if kind == "Deployment" else "updateStrategy") or {}
        rolling = update.get("rollingUpdate") or {}
        common: dict[str, Any] = dict(
            kind=kind,
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            app=(meta.get("labels") or {}).get(APP_LABEL, ""),
            images={c.get("name", ""): c.get("image", "") for c in containers},
            annotations={k: v for k, v in (meta.get("annotations") or {}).items()
                         if k.startswith(ANNOTATION_PREFIX) or k == ANN_CHANGE_CAUSE},
            generation=int(meta.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            conditions=tuple(status.get("conditions") or ()),
            selector=dict(((spec.get("selector") or {}).get("matchLabels")) or {}),
            strategy=str(update.get("type") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
        )
        if kind == "DaemonSet":
            desired = int(status.get("desiredNumberScheduled") or 0)
            return cls(replicas=desired, status_replicas=int(status.get("currentNumberScheduled") or 0),
                       updated_replicas=int(status.get("updatedNumberScheduled") or 0),
                       ready_replicas=int(status.get("numberReady") or 0),
                       available_replicas=int(status.get("numberAvailable") or 0), **common)
        if kind == "CronJob":
            return cls(replicas=0, status_replicas=0, updated_replicas=0, ready_replicas=0, available_replicas=0,
                       **common)
        return cls(
            replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
            status_replicas=int(status.get("replicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or 0),
            current_revision=status.get("currentRevision"),
            update_revision=status.get("updateRevision"),
            partition=int(rolling.get("partition") or 0),
            paused=bool(spec.get("paused")),
            **common,
        )


@dataclass(frozen=True)
class Suspension:
    """Who suspended a workload, when and why (from its annotations)."""

    by: str
    reason: str
    at: str

    def describe(self) -> str:
        return f"suspended by {self.by or 'unknown'}{f' at {self.at}' if self.at else ''}: {self.reason}"


def suspension(workloads: Sequence[Workload]) -> Suspension | None:
    """The suspension of the first suspended workload among ``workloads``, or None."""
    for w in workloads:
        if w.annotations.get(ANN_SUSPENDED) == "true":
            return Suspension(by=w.annotations.get(ANN_SUSPENDED_BY, ""),
                              reason=w.annotations.get(ANN_SUSPENDED_REASON, ""),
                              at=w.annotations.get(ANN_SUSPENDED_AT, ""))
    return None


def rollout_status(w: Workload) -> RolloutStatus:
    """Whether the workload's latest spec has fully rolled out (the rules of ``kubectl rollout status``),
    failing at once where waiting cannot help."""
    if w.kind == "CronJob":
        return RolloutStatus(Health.HEALTHY, "no rollout: the next Job runs the applied image")
    if w.kind == "Deployment":
        return _deployment_status(w)
    if w.strategy == "OnDelete" and not _revision_complete(w):
        return RolloutStatus(Health.FAILED, "update strategy OnDelete: pods are replaced only when deleted, so "
                             "the rollout will not progress on its own (delete the pods or use RollingUpdate)")
    if w.kind == "DaemonSet":
        return _daemonset_status(w)
    return _statefulset_status(w)


def _revision_complete(w: Workload) -> bool:
    """An OnDelete workload whose pods all run the latest template (nothing left to replace)."""
    if w.observed_generation < w.generation:
        return False
    if w.kind == "DaemonSet":
        return w.updated_replicas >= w.replicas
    return not w.update_revision or w.current_revision == w.update_revision


def _deployment_status(w: Workload) -> RolloutStatus:
    for cond in w.conditions:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            if w.observed_generation >= w.generation:
                return RolloutStatus(Health.FAILED,
                                     f"ProgressDeadlineExceeded: {cond.get('message', '')}".strip())
    complete = (w.observed_generation >= w.generation and w.updated_replicas >= w.replicas
                and w.status_replicas <= w.updated_replicas and w.available_replicas >= w.updated_replicas)
    if w.paused and not complete:
        return RolloutStatus(Health.FAILED, "deployment is paused: the rollout will not progress until it is "
                             f"resumed (kubectl rollout resume deployment/{w.name})")
    if w.observed_generation < w.generation:
        return RolloutStatus(Health.PROGRESSING, "waiting for the controller to observe the new spec")
    if w.updated_replicas < w.replicas:
        return RolloutStatus(Health.PROGRESSING, f"{w.updated_replicas}/{w.replicas} replicas updated")
    if w.status_replicas > w.updated_replicas:
        old = w.status_replicas - w.updated_replicas
        return RolloutStatus(Health.PROGRESSING, f"{old} old replicas pending termination")
    if w.available_replicas < w.updated_replicas:
        return RolloutStatus(
            Health.PROGRESSING, f"{w.available_replicas}/{w.updated_replicas} updated replicas available"
        )
    return RolloutStatus(Health.HEALTHY, f"{w.available_replicas}/{w.replicas} replicas available")


def _daemonset_status(w: Workload) -> RolloutStatus:
    """``kubectl rollout status daemonset/...``: every scheduled pod updated, then available."""
    if w.observed_generation < w.generation:
        return RolloutStatus(Health.PROGRESSING, "waiting for the controller to observe the new spec")
    if w.updated_replicas < w.replicas:
        return RolloutStatus(Health.PROGRESSING, f"{w.updated_replicas} out of {w.replicas} new pods updated")
    if w.available_replicas < w.replicas:
        return RolloutStatus(Health.PROGRESSING, f"{w.available_replicas} of {w.replicas} updated pods available")
    return RolloutStatus(Health.HEALTHY, f"{w.available_replicas}/{w.replicas} scheduled pods available")


def _statefulset_status(w: Workload) -> RolloutStatus:
    if w.observed_generation == 0 or w.observed_generation < w.generation:
        return RolloutStatus(Health.PROGRESSING, "waiting for the controller to observe the new spec")
    if w.ready_replicas < w.replicas:
        return RolloutStatus(Health.PROGRESSING, f"{w.ready_replicas}/{w.replicas} replicas ready")
    if w.partition > 0:
        if w.updated_replicas < w.replicas - w.partition:
            return RolloutStatus(Health.PROGRESSING, f"{w.updated_replicas} replicas updated (partition {w.partition})")
        return RolloutStatus(Health.HEALTHY, f"partitioned rollout: {w.updated_replicas} replicas updated")
    if w.update_revision and w.current_revision != w.update_revision:
        return RolloutStatus(Health.PROGRESSING, f"{w.updated_replicas}/{w.replicas} replicas updated")
    return RolloutStatus(Health.HEALTHY, f"{w.ready_replicas}/{w.replicas} replicas ready")


def drifted(w: Workload) -> bool:
    """True when deployctl applied an image to this workload and no container runs it any more
    (someone changed it by hand, e.g. ``kubectl set image``)."""
    applied = w.annotations.get(ANN_IMAGE)
    return bool(applied) and applied not in w.images.values()


def combined_status(workloads: Sequence[Workload]) -> RolloutStatus:
    """The health of an app made of several workloads: failed beats progressing beats healthy."""
    statuses = [(w, rollout_status(w)) for w in workloads]
    for wanted in (Health.FAILED, Health.PROGRESSING):
        hits = [f"{w.ref}: {s.message}" for w, s in statuses if s.health is wanted]
        if hits:
            return RolloutStatus(wanted, "; ".join(hits))
    return RolloutStatus(Health.HEALTHY, "; ".join(f"{w.ref}: {s.message}" for w, s in statuses))
