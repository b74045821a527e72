"""The Kubernetes edge: observe labelled workloads, patch images, read pod failure reasons.

Requests are raw JSON over :class:`~deployctl.edges.kube.transport.Transport` (no kubernetes
client import on the reconcile path: its models are slow to load); every request is counted by
verb, and connection failures become :class:`~deployctl.errors.ClusterUnreachableError`. The
kubernetes client is imported only by the kubeconfig loader, and only for what it alone handles
(exec plugins, auth providers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from deployctl.edges.kube.informer import Informer
from deployctl.edges.kube.resources import PLURAL as _PLURAL
from deployctl.edges.kube.resources import RESOURCES, collection_path
from deployctl.edges.kube.transport import ClusterError, Transport, load_endpoint
from deployctl.errors import KubeConflictError, KubeForbiddenError, KubeNotFoundError
from deployctl.model.workload import KINDS, WORKLOAD_SELECTOR, Workload

log = structlog.get_logger(__name__)

FIELD_MANAGER = "deployctl"
__all__ = ["FIELD_MANAGER", "RESOURCES", "Cluster", "ClusterError", "PodProblem", "collection_path"]


@dataclass(frozen=True)
class PodProblem:
    pod: str
    reason: str


class Cluster:
    """A connection to one cluster (one kubeconfig context)."""

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        pool_size: int = 32,
        timeout: float = 15.0,
    ) -> None:
        self.timeout = timeout
        self.context = context
        self.kubeconfig = kubeconfig
        self.transport = Transport(load_endpoint(kubeconfig, context), pool_size=pool_size, timeout=timeout)
        self.server = self.transport.server
        # (namespace, kind) -> cached workloads, or None to LIST (the controller's informer cache)
        self.reader: Callable[[str, str], list[Workload] | None] | None = None
        self._sizes: dict[tuple[str, str], int] = {}  # (namespace, kind) -> workloads in its last LIST

    @property
    def requests(self) -> Counter[str]:
        """Requests sent so far, by HTTP verb (``WATCH`` for watch streams)."""
        return Counter(self.transport.requests)

    def request(self, method: str, path: str, *, what: str, query: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        return self.transport.request(method, path, what=what, query=query, body=body, content_type=content_type)

    # -- observe ------------------------------------------------------------------------------

    def list_workloads(self, namespace: str, *, app_selector: str = WORKLOAD_SELECTOR) -> list[Workload]:
        """Every labelled workload of :data:`KINDS` in ``namespace``: one LIST per kind."""
        return [w for kind in KINDS for w in self.list_kind(namespace, kind, app_selector=app_selector)]

    def list_kind(self, namespace: str, kind: str, *, app_selector: str = WORKLOAD_SELECTOR) -> list[Workload]:
        """The labelled workloads of one kind in ``namespace``: one LIST (none when a cache has them)."""
        if self.reader is not None and app_selector == WORKLOAD_SELECTOR:
            cached = self.reader(namespace, kind)
            if cached is not None:
                return cached
        return self.list_kind_at(namespace, kind, app_selector=app_selector)[0]

    def list_kind_at(self, namespace: str, kind: str, *, app_selector: str = WORKLOAD_SELECTOR) -> tuple[list[Workload], str]:
        """The labelled workloads of one kind and the list's resourceVersion (where a watch starts)."""
        body = self.request("GET", collection_path(kind, namespace), what=f"list {_PLURAL[kind]} in {namespace}",
                            query={"labelSelector": app_selector})
        items = [Workload.from_object(item, kind) for item in body.get("items", [])]
        self._sizes[(namespace, kind)] = len(items)
        return items, str((body.get("metadata") or {}).get("resourceVersion") or "")

    def read_workloads(self, namespace: str, kind: str, names: Collection[str]) -> dict[str, Workload]:
        """The labelled workloads of ``names`` (those that exist) as they are now: from the cache when one is
        set, else one GET each when they are few beside the namespace's last LIST (a wave of 64 apps in a
        namespace of 2,500 is 64 small answers, not 2,500 objects), else one LIST."""
        if self.reader is None and len(names) * 8 < self._sizes.get((namespace, kind), 0):
            found: dict[str, Workload] = {}
            for name in names:
                try:
                    found[name] = self.get_workload(kind, namespace, name)
                except KubeNotFoundError:
                    continue
            return {n: w for n, w in found.items() if w.app}
        return {w.name: w for w in self.list_kind(namespace, kind) if w.name in names}

    def observe_kind(self, namespace: str, kind: str) -> tuple[list[Workload], str]:
        """The labelled workloads of one kind, through the cache when one is set (then without a
        resourceVersion: a watch starts with a LIST of its own), else from a LIST with its resourceVersion."""
        if self.reader is not None:
            return self.list_kind(namespace, kind), ""
        return self.list_kind_at(namespace, kind)

    def watch(self, namespace: str, kind: str, *, on_change: Callable[[Workload], None],
              items: list[Workload] | None = None, resource_version: str = "", deadline: float | None = None) -> Informer:
        """A started :class:`Informer` of one namespace and kind (from ``items`` at ``resource_version``
        when given: no LIST of its own; a lagging watch cache waited for until ``deadline``)."""
        informer = Informer(self, namespace, kind, on_change=on_change, deadline=deadline)
        if items is not None and resource_version:
            return informer.start(items=items, resource_version=resource_version)
        return informer.start()

    def get_workload(self, kind: str, namespace: str, name: str) -> Workload:
        body = self.request("GET", f"{collection_path(kind, namespace)}/{name}", what=f"get {kind} {namespace}/{name}")
        return Workload.from_object(body, kind)

    def namespace_exists(self, namespace: str) -> bool:
        try:
            self.request("GET", f"/api/v1/namespaces/{namespace}", what=f"get namespace {namespace}")
        except (KubeForbiddenError, KubeNotFoundError):
            return False
        return True

    def pod_problems(self, workload: Workload, *, limit: int = 3) -> list[PodProblem]:
        """Why a workload's pods are not ready: waiting reasons, failed conditions, or phase."""
        if not workload.selector:
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(workload.selector.items()))
        body = self.request("GET", f"/api/v1/namespaces/{workload.namespace}/pods",
                            what=f"list pods of {workload.ref}", query={"labelSelector": selector})
        problems: list[PodProblem] = []
        for pod in body.get("items", []):
            reason = _pod_reason(pod)
            if reason:
                problems.append(PodProblem(pod["metadata"]["name"], reason))
        problems.sort(key=lambda p: p.pod, reverse=True)
        return problems[:limit]

    # -- act ----------------------------------------------------------------------------------

    def apply_image(
        self, workload: Workload, *, container: str, image: str, annotations: Mapping[str, str],
        resource_version: str = "",
    ) -> Workload:
        """Server-side apply of one container image and deployctl's annotations, as field manager ``deployctl``.
        A CronJob's image is on its job template. With ``resource_version``, the apply is refused (409) when
        the workload changed since (a precondition: a sharded controller's fencing)."""
        pod_template = {"spec": {"containers": [{"name": container, "image": image}]}}
        spec = ({"jobTemplate": {"spec": {"template": pod_template}}} if workload.kind == "CronJob"
                else {"template": pod_template})
        body: dict[str, Any] = {
            "apiVersion": RESOURCES[workload.kind][0].removeprefix("/apis/"),
            "kind": workload.kind,
            "metadata": {"name": workload.name, "namespace": workload.namespace, "annotations": dict(annotations)},
            "spec": spec,
        }
        if resource_version:
            body["metadata"]["resourceVersion"] = resource_version
        result = self.request(
            "PATCH", f"{collection_path(workload.kind, workload.namespace)}/{workload.name}",
            what=f"apply {workload.ref} in {workload.namespace}", body=body,
            query={"fieldManager": FIELD_MANAGER, "force": "true"}, content_type="application/apply-patch+yaml",
        )
        return Workload.from_object(result, workload.kind)

    def annotate(self, workload: Workload, annotations: Mapping[str, str | None]) -> Workload:
        """Set (or, with None, remove) annotations on one workload with a JSON merge patch."""
        body = {"metadata": {"annotations": dict(annotations)}}
        result = self.request(
            "PATCH", f"{collection_path(workload.kind, workload.namespace)}/{workload.name}",
            what=f"annotate {workload.ref} in {workload.namespace}", body=body,
            query={"fieldManager": FIELD_MANAGER}, content_type="application/merge-patch+json",
        )
        return Workload.from_object(result, workload.kind)

    def read_batch(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job or CronJob as the API returns it (pre-deploy templates and their Jobs); None when absent."""
        plural = "cronjobs" if kind == "CronJob" else "jobs"
        try:
            return self.request("GET", f"/apis/batch/v1/namespaces/{namespace}/{plural}/{name}",
                                what=f"get {kind.lower()}/{name} in {namespace}")
        except KubeNotFoundError:
            return None

    def create_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Job; :class:`KubeConflictError` when one of that name exists."""
        meta = body["metadata"]
        return self.request("POST", f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs",
                            what=f"create job/{meta['name']} in {meta['namespace']}", body=dict(body),
                            query={"fieldManager": FIELD_MANAGER})

    def ensure_namespace(self, name: str) -> None:
        """Create a namespace unless it exists (for the demo and benchmarks, not for reconcile)."""
        try:
            self.request("POST", "/api/v1/namespaces", what=f"create namespace {name}",
                         body={"metadata": {"name": name}})
        except KubeConflictError:
            pass

    def create_deployment(self, body: Mapping[str, Any]) -> None:
        """Create a Deployment unless it exists (for the demo and benchmarks, not for reconcile)."""
        meta = body["metadata"]
        try:
            self.request("POST", collection_path("Deployment", meta["namespace"]),
                         what=f"create deployment {meta['namespace']}/{meta['name']}", body=dict(body))
        except KubeConflictError:
            pass


def _pod_reason(pod: Mapping[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            msg = waiting.get("message") or ""
            return f"{waiting['reason']}{': ' + msg if msg else ''}"
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated and terminated.get("reason"):
            return f"container {cs.get('name')} terminated: {terminated['reason']}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return None
    for cond in status.get("conditions") or []:
        if cond.get("status") == "False" and cond.get("reason"):
            return f"{cond['type']}={cond['reason']}: {cond.get('message', '')}".strip(": ")
    phase = status.get("phase") or "Unknown"
    return f"pod not ready (phase {phase})"
