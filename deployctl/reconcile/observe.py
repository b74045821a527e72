"""Observe: the one step that reads the cluster before anything is decided (guards, LISTs, applied pins)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deployctl.edges.kube.cluster import Cluster
from deployctl.edges.kube.kubeconfig import current_context
from deployctl.model.state import DesiredState
from deployctl.model.workload import ANN_IMAGE, KINDS, Workload
from deployctl.reconcile.artifacts import known_pins
from deployctl.reconcile.ports import Clusters
from deployctl.rules.reach import allowlist_refusals, parse_allowed, shared_targets


class ClusterPool:
    """One :class:`Cluster` per kubeconfig context, created on first use."""

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context_override = context
        self._clusters: dict[str | None, Cluster] = {}
        self._lock = threading.Lock()
        self._current: tuple[str | None] | None = None

    def context_name(self, context: str | None) -> str | None:
        """The kubeconfig context an environment's ``context:`` resolves to (None: in-cluster)."""
        if self.context_override or context:
            return self.context_override or context
        with self._lock:
            if self._current is None:
                self._current = (current_context(self.kubeconfig),)
            return self._current[0]

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


def check_namespaces(
    desired: DesiredState, allowed: Sequence[str], *, context_name: Callable[[str | None], str | None] | None = None,
) -> dict[str, str]:
    """Environments deployctl may not touch (env -> reason): two environments sharing one context +
    namespace, or a context + namespace that the allowlist (``ctx/ns`` or bare ``ns`` entries) does not name."""
    if desired.config is None:
        return {}
    name_of = context_name or (lambda context: context)
    reach = {name: (name_of(env.context), env.namespace) for name, env in desired.config.environments.items()}
    refused = shared_targets(reach)
    rest = {name: where for name, where in reach.items() if name not in refused}
    refused.update(allowlist_refusals(rest, parse_allowed(allowed), current_context=name_of(None)))
    return refused


def observe(
    desired: DesiredState, clusters: Clusters, *, envs: Sequence[str] = (), concurrency: int = 2
) -> dict[str, list[Workload]]:
    """The labelled workloads of every selected environment's namespace (one LIST per kind)."""
    return observe_at(desired, clusters, envs=envs, concurrency=concurrency)[0]


Seeds = dict[tuple[str | None, str, str], tuple[list[Workload], str]]
"""(context, namespace, kind) -> the workloads a LIST returned and its resourceVersion (where a watch
of the same selection may start without another LIST)."""


def observe_at(
    desired: DesiredState, clusters: Clusters, *, envs: Sequence[str] = (), concurrency: int = 2
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
        return clusters(wanted[job[0]]).observe_kind(job[0], job[1])

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

    envs: tuple[str, ...]  # the selected environments (all named ones when none was asked for)
    refused: Mapping[str, str]  # env -> why its namespace may not be touched (not observed)
    live: Mapping[str, list[Workload]]  # namespace -> labelled workloads
    known_images: Mapping[tuple[str, str], str]  # digest pins already applied for the same tag
    seeds: Seeds = field(default_factory=dict)  # where the rollout wait's watches start (no second LIST)


def observe_selection(
    desired: DesiredState,
    clusters: Clusters,
    *,
    envs: Sequence[str] = (),
    apps: Sequence[str] = (),
    allowed_namespaces: Sequence[str] = (),
    concurrency: int = 2,
) -> Observation:
    """The one observe step of ``plan``, ``status`` and ``reconcile``: guards on namespaces, one LIST
    per allowed namespace and kind, and the pins the workloads already carry."""
    refused = check_namespaces(desired, allowed_namespaces, context_name=clusters.context_name)
    selected = tuple(envs) or desired.named_environments()
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
