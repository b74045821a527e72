"""The ports of a reconcile run: what it needs from the clusters and the app locks.

:class:`~deployctl.reconcile.observe.ClusterPool` (Kubernetes) implements them for real; an in-memory
fake (``tests/fakes.py``) implements them for unit tests of the reconciler. A wrapper implements every
member, so nobody has to probe a collaborator for an optional one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from deployctl.edges.kube.cluster import PodProblem
from deployctl.edges.kube.locks import LockHolder
from deployctl.model.workload import Workload


class Watch(Protocol):
    """A running watch of one namespace and kind: the workloads as last seen."""

    def items(self) -> dict[str, Workload]: ...

    def stop(self) -> None: ...


class Workloads(Protocol):
    """One cluster as reconcile sees it: list the labelled workloads, apply an image, watch rollouts, and run
    pre-deploy Jobs (read a template, create and read a Job)."""

    @property
    def server(self) -> str: ...

    @property
    def requests(self) -> Mapping[str, int]: ...

    def list_kind(self, namespace: str, kind: str) -> list[Workload]:
        """The labelled workloads of one kind in ``namespace``."""
        ...

    def observe_kind(self, namespace: str, kind: str) -> tuple[list[Workload], str]:
        """:meth:`list_kind` and the resourceVersion a watch may start from ("" when a cache answered)."""
        ...

    def read_workloads(self, namespace: str, kind: str, names: Collection[str]) -> dict[str, Workload]:
        """The labelled workloads of ``names`` that exist, by name, as they are now (a few GETs or a LIST)."""
        ...

    def apply_image(self, workload: Workload, *, container: str, image: str,
                    annotations: Mapping[str, str]) -> Workload:
        """Set one container's image and deployctl's annotations in one atomic write; the workload after it."""
        ...

    def pod_problems(self, workload: Workload, *, limit: int = 3) -> list[PodProblem]:
        """Why some pods of a failing workload are not ready."""
        ...

    def read_batch(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job or CronJob as JSON (pre-deploy templates and their Jobs); None when it does not exist."""
        ...

    def create_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Job (a KubeConflictError when one of that name exists); the Job as created."""
        ...

    def watch(self, namespace: str, kind: str, *, on_change: Callable[[Workload], None],
              items: list[Workload] | None = None, resource_version: str = "", deadline: float | None = None) -> Watch:
        """Start watching (from ``items`` at ``resource_version`` when given, else after a LIST of its own);
        a server's watch cache behind that resourceVersion is waited for until ``deadline`` (time.monotonic())."""
        ...


class Clusters(Protocol):
    """The clusters of a run, one per environment ``context:`` (None: the current context)."""

    def __call__(self, context: str | None) -> Workloads: ...

    def context_name(self, context: str | None) -> str | None:
        """The kubeconfig context an environment's ``context:`` resolves to (None: in-cluster)."""
        ...

    def requests(self) -> dict[str, int]:
        """Requests sent so far over every cluster, by HTTP verb."""
        ...


class Lock(Protocol):
    """An app's lock, once taken."""

    def held(self) -> bool:
        """True while the lock is ours and renewed in time."""
        ...

    def release(self) -> None: ...


class Locks(Protocol):
    """One writer per app (CI runs and controller replicas alike), taken only by a run that writes the app."""

    def try_take(self, context: str | None, namespace: str, app: str, *, identity: str,
                 lease: float) -> Lock | LockHolder:
        """One try at the lock of ``app`` in ``context``/``namespace``: the lock, now ours, or the holder
        that keeps it (the caller tries again later, up to its lock timeout)."""
        ...

    def take_if_gone(self, context: str | None, namespace: str, app: str, *, holder: str | None, identity: str,
                     lease: float) -> Lock | LockHolder:
        """One try at ``app``'s lock for an attempt ``holder`` left open: the lock, now ours, when ``holder`` is
        gone from it (free, expired, or its record stale); else the holder that keeps it."""
        ...


class GatedClusters:
    """The clusters of a run that may have to stop: ``check`` runs before each cluster is handed out and
    raises once acting must stop (the controller lost its lease or stopped)."""

    def __init__(self, clusters: Clusters, check: Callable[[], None]) -> None:
        self.clusters = clusters
        self.check = check

    def __call__(self, context: str | None) -> Workloads:
        self.check()
        return self.clusters(context)

    def context_name(self, context: str | None) -> str | None:
        return self.clusters.context_name(context)

    def requests(self) -> dict[str, int]:
        return self.clusters.requests()
