"""Observe: the one step that reads the cluster before anything is decided (guards, LISTs, applied pins)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deployctl.edges.kube.cluster import Cluster
from deployctl.model.state import DesiredState
from deployctl.model.workload import ANN_IMAGE, KINDS, Workload
from deployctl.reconcile.artifacts import known_pins

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
    return observe_at(desired, clusters, envs=envs, concurrency=concurrency)[0]


Seeds = dict[tuple[str | None, str, str], tuple[list[Workload], str]]
"""(context, namespace, kind) -> the workloads a LIST returned and its resourceVersion (where a watch
of the same selection may start without another LIST)."""


def observe_at(
    desired: DesiredState, clusters: ClusterFor, *, envs: Sequence[str] = (), concurrency: int = 2
) -> tuple[dict[str, list[Workload]], Seeds]:
    """:func:`observe`, and the resourceVersion of each LIST (none when a cache answered)."""
    live: dict[str, list[Workload]] = {}
    seeds: Seeds = {}
    if desired.config is None:
        return live, seeds
    wanted: dict[str, str | None] = {}
    for name in sorted(desired.config.environments):
        env = desired.config.environments[name]
        if (not envs or name in envs) and env.namespace not in wanted:
            wanted[env.namespace] = env.context
    jobs = [(ns, kind) for ns in wanted for kind in KINDS]

    def one(job: tuple[str, str]) -> tuple[list[Workload], str]:
        cluster = clusters(wanted[job[0]])
        if cluster.reader is not None:  # the controller's cache: no LIST, so no resourceVersion
            return cluster.list_kind(job[0], job[1]), ""
        return cluster.list_kind_at(job[0], job[1])

    if concurrency <= 1 or len(jobs) <= 2:
        results = [one(job) for job in jobs]
    else:  # the server encodes one LIST while we decode another; a bound keeps peak memory down
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="deployctl-list") as pool:
            results = list(pool.map(one, jobs))
    for (ns, kind), (workloads, rv) in zip(jobs, results, strict=True):
        live.setdefault(ns, []).extend(workloads)
        if rv:
            seeds[(wanted[ns], ns, kind)] = (workloads, rv)
    return live, seeds


@dataclass(frozen=True)
class Observation:
    """What the cluster shows for a selection of a desired state, before anything is decided."""

    envs: tuple[str, ...]  # the selected environments (all of the config's when none was asked for)
    refused: Mapping[str, str]  # env -> why its namespace may not be touched (not observed)
    live: Mapping[str, list[Workload]]  # namespace -> labelled workloads
    known_images: Mapping[tuple[str, str], str]  # digest pins already applied for the same tag
    seeds: Seeds = field(default_factory=dict)  # where the rollout wait's watches start (no second LIST)


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
    live, seeds = observe_at(desired, clusters, envs=allowed, concurrency=concurrency) if allowed else ({}, {})
    targets = [t for t in desired.targets if t.env in selected and (not apps or t.app in apps)]
    known = known_pins(targets, desired.config, applied_images(live))
    return Observation(envs=selected, refused=refused, live=live, known_images=known, seeds=seeds)


def applied_images(live: Mapping[str, Sequence[Workload]]) -> dict[tuple[str, str], set[str | None]]:
    """(namespace, app) -> the images deployctl last applied to its workloads (annotation)."""
    out: dict[tuple[str, str], set[str | None]] = {}
    for workloads in live.values():
        for w in workloads:
            out.setdefault((w.namespace, w.app), set()).add(w.annotations.get(ANN_IMAGE))
    return out
