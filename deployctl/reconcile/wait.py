"""Waiting for rollouts: read the workloads being waited for and judge their health, as
``kubectl rollout status`` does. One LIST per namespace and kind being waited for."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from deployctl.edges.kube.cluster import Cluster, ClusterError
from deployctl.model.workload import Health, RolloutStatus, Workload, combined_status


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


def check_rollouts(clusters: Callable[[str | None], Cluster], waiting: Sequence[Waiting]) -> dict[tuple[str, str], Seen]:
    """The current rollout verdict of each waiting env/app."""
    by_ns: dict[tuple[str | None, str], list[Waiting]] = {}
    for w in waiting:
        by_ns.setdefault((w.context, w.namespace), []).append(w)
    seen: dict[tuple[str, str], Seen] = {}
    for (ctx, namespace), group in by_ns.items():
        cluster = clusters(ctx)
        kinds = sorted({wl.kind for w in group for wl in w.workloads})
        current = {(wl.kind, wl.name): wl for kind in kinds for wl in cluster.list_kind(namespace, kind)}
        for w in group:
            fresh = tuple(current.get((wl.kind, wl.name), wl) for wl in w.workloads)
            # A status computed before our apply was observed must not count.
            fresh = tuple(f if f.generation >= old.generation else old
                          for f, old in zip(fresh, w.workloads, strict=True))
            status = combined_status(fresh)
            reasons = pod_reasons(cluster, fresh) if status.health is Health.FAILED else ""
            seen[w.key] = Seen(workloads=fresh, status=status, pod_reasons=reasons)
    return seen


def pod_reasons(cluster: Cluster, workloads: Iterable[Workload]) -> str:
    """Why the pods of failing workloads are not ready (a few of them), for the failure message."""
    reasons: list[str] = []
    for w in workloads:
        try:
            reasons.extend(f"{p.pod}: {p.reason}" for p in cluster.pod_problems(w, limit=2))
        except ClusterError:
            continue
    return "; ".join(reasons)
