"""Waiting for rollouts: judge the health of the workloads being waited for, as
``kubectl rollout status`` does, from watch events.

A :class:`RolloutWatch` opens one :class:`~deployctl.edges.kube.informer.Informer` per context,
namespace and kind being waited for: one watch, from the resourceVersion of the observe step's
LIST (so a reconcile LISTs each namespace and kind once in all), or after a LIST of its own. Checking a
waiting app reads memory, not the API; ``changed`` is set by every event so the reconciler wakes
up as soon as something moved. Pods are listed only to explain a failed rollout.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deployctl.edges.kube.cluster import ClusterError
from deployctl.model.workload import ROLLOUT_KINDS, Health, RolloutStatus, Workload, combined_status
from deployctl.reconcile.ports import Clusters, Watch, Workloads


@dataclass(frozen=True)
class Waiting:
    """One env/app whose rollout is being waited for."""

    key: tuple[str, str]
    context: str | None
    namespace: str
    workloads: tuple[Workload, ...]


@dataclass(frozen=True)
class Seen:
    """What a check found for one :class:`Waiting`: the fresh workloads, their verdict, and (when the
    rollout failed) what the pods say."""

    workloads: tuple[Workload, ...]
    status: RolloutStatus
    pod_reasons: str = ""


class RolloutWatch:
    """The informers of one reconcile run's wait, opened on first use and stopped by :meth:`close`."""

    def __init__(self, clusters: Clusters, *,
                 seeds: Mapping[tuple[str | None, str, str], tuple[list[Workload], str]] | None = None,
                 deadline: float | None = None) -> None:
        self.clusters = clusters
        self.deadline = deadline  # the rollouts' time.monotonic() deadline: a lagging watch cache is waited for until then
        self.seeds = dict(seeds or {})  # the observe step's LISTs: a watch starts there, without its own LIST
        self.changed = threading.Event()
        self._informers: dict[tuple[str | None, str, str], Watch] = {}
        self._dirty: set[tuple[str | None, str, str, str]] = set()  # (context, namespace, kind, name)
        self._lock = threading.Lock()

    def current(self, context: str | None, namespace: str, kind: str) -> dict[str, Workload]:
        key = (context, namespace, kind)
        informer = self._informers.get(key)
        if informer is None:
            def changed(w: Workload) -> None:
                with self._lock:
                    self._dirty.add((context, w.namespace, w.kind, w.name))
                self.changed.set()

            seed = self.seeds.pop(key, None)
            informer = self.clusters(context).watch(namespace, kind, on_change=changed,
                                                    items=seed[0] if seed else None,
                                                    resource_version=seed[1] if seed else "", deadline=self.deadline)
            self._informers[key] = informer
        return informer.items()

    def take_changed(self) -> set[tuple[str | None, str, str, str]]:
        """The workloads an event touched since the last call (context, namespace, kind, name)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        self.changed.clear()
        return dirty

    @property
    def informers(self) -> tuple[Watch, ...]:
        return tuple(self._informers.values())

    def close(self) -> None:
        for informer in self._informers.values():
            informer.stop()
        self._informers.clear()


def check_rollouts(clusters: Clusters, waiting: Sequence[Waiting], *,
                   watch: RolloutWatch | None = None) -> dict[tuple[str, str], Seen]:
    """The current rollout verdict of each waiting env/app: from ``watch`` (no API call once its
    informers run), or one LIST per namespace and kind without it."""
    by_ns: dict[tuple[str | None, str], list[Waiting]] = {}
    for w in waiting:
        by_ns.setdefault((w.context, w.namespace), []).append(w)
    seen: dict[tuple[str, str], Seen] = {}
    for (ctx, namespace), group in by_ns.items():
        cluster = clusters(ctx)
        # A CronJob has no rollout: its applied object is its verdict (no watch, no LIST).
        kinds = sorted({wl.kind for w in group for wl in w.workloads if wl.kind in ROLLOUT_KINDS})
        current: dict[tuple[str, str], Workload] = {}
        for kind in kinds:
            found = (watch.current(ctx, namespace, kind) if watch is not None
                     else {wl.name: wl for wl in cluster.list_kind(namespace, kind)})
            current.update({(kind, name): wl for name, wl in found.items()})
        for w in group:
            fresh = tuple(current.get((wl.kind, wl.name), wl) for wl in w.workloads)
            # A status computed before our apply was observed must not count.
            fresh = tuple(f if f.generation >= old.generation else old
                          for f, old in zip(fresh, w.workloads, strict=True))
            status = combined_status(fresh)
            reasons = pod_reasons(cluster, fresh) if status.health is Health.FAILED else ""
            seen[w.key] = Seen(workloads=fresh, status=status, pod_reasons=reasons)
    return seen


def pod_reasons(cluster: Workloads, workloads: Iterable[Workload]) -> str:
    """Why the pods of failing workloads are not ready (a few of them), for the failure message."""
    reasons: list[str] = []
    for w in workloads:
        if w.kind == "CronJob":
            continue
        try:
            reasons.extend(f"{p.pod}: {p.reason}" for p in cluster.pod_problems(w, limit=2))
        except ClusterError:
            continue
    return "; ".join(reasons)
