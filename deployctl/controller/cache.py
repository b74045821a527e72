"""The controller's informer-style cache of the managed workloads.

For every namespace (and kubeconfig context) the deploy repo targets, one
:class:`~deployctl.edges.kube.informer.Informer` per managed kind keeps the labelled workloads in
memory (list + watch, a re-list only on ``410 Gone`` or a dropped stream). Two things follow:

- the observe step of each reconcile reads the cache instead of LISTing (the clusters of the pool
  are given :meth:`WorkloadCache.lookup` as their reader), so a periodic drift check costs no API
  call;
- a workload whose live image no longer matches what deployctl applied (a manual
  ``kubectl set image``) is seen the moment the watch event arrives, and ``on_drift`` asks the
  controller for a sync at once instead of at the next interval.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from deployctl.edges.kube.informer import Informer
from deployctl.errors import DeployctlError
from deployctl.model.workload import KINDS, Workload, drifted
from deployctl.reconcile.observe import ClusterPool
from deployctl.rules.plan import Plan

log = structlog.get_logger(__name__)


class WorkloadCache:
    """Informers for the (context, namespace) pairs the last plans touched; start with :meth:`track`."""

    def __init__(self, pool: ClusterPool, *, on_drift: Callable[[Workload], None]) -> None:
        self.pool = pool
        self.on_drift = on_drift
        self._informers: dict[tuple[str | None, str, str], Informer] = {}
        self._reported: set[tuple[str, str, str, tuple[tuple[str, str], ...]]] = set()
        self._lock = threading.Lock()

    def track(self, plan: Plan) -> None:
        """Watch every namespace of ``plan`` (each is listed once, when first seen)."""
        wanted = {(c.target.context if c.target else None, c.namespace) for c in plan.changes if c.namespace}
        for context, namespace in sorted(wanted, key=lambda k: (k[0] or "", k[1])):
            for kind in KINDS:
                key = (context, namespace, kind)
                if key in self._informers:
                    continue
                cluster = self.pool(context)
                informer = Informer(cluster, namespace, kind, on_change=self._changed)
                try:
                    informer.start()
                except DeployctlError as exc:  # e.g. no RBAC to watch this kind: observe LISTs it instead
                    log.warning("cache.watch_failed", namespace=namespace, kind=kind, error=str(exc))
                    continue
                with self._lock:
                    self._informers[key] = informer
                cluster.reader = self._reader(context)

    def _reader(self, context: str | None) -> Callable[[str, str], list[Workload] | None]:
        return lambda namespace, kind: self.lookup(context, namespace, kind)

    def lookup(self, context: str | None, namespace: str, kind: str) -> list[Workload] | None:
        """The cached workloads of one namespace and kind; None when not cached (then the caller LISTs)."""
        with self._lock:
            informer = self._informers.get((context, namespace, kind))
        if informer is None or informer.error is not None:
            return None
        return list(informer.items().values())

    def _changed(self, w: Workload) -> None:
        if not drifted(w):
            return
        signature = (w.namespace, w.kind, w.name, tuple(sorted(w.images.items())))
        with self._lock:
            if signature in self._reported:
                return
            self._reported.add(signature)
            if len(self._reported) > 10_000:
                self._reported.clear()
        log.info("cache.drift_seen", namespace=w.namespace, workload=w.ref, app=w.app, images=dict(w.images))
        self.on_drift(w)

    @property
    def size(self) -> int:
        with self._lock:
            return sum(len(i.items()) for i in self._informers.values())

    def close(self) -> None:
        with self._lock:
            informers = list(self._informers.values())
            self._informers.clear()
        for informer in informers:
            informer.stop()
