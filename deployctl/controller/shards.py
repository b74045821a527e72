"""A sharded controller's part of each run: only the (environment, app) keys of the slots it holds, every
apply fenced by the slot's token, every audit attempt carrying it.

:class:`ShardRuns` is what :class:`~deployctl.controller.loop.Controller` asks at the start of a run
(:meth:`ShardRuns.begin`: the desired state cut down to the keys of the slots held now, which are then
busy until :meth:`ShardRuns.end`, so none of them is handed back mid-run) and for its clusters and audit.

Fencing: an apply writes ``deployctl.dev/fence: <set>/<slot>:<token>`` on the workload, with the
resourceVersion it read as a precondition; an apply whose token is older than the one on the workload is
refused (:class:`FenceError`), and so is any apply once the slot's Lease was not renewed in time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from deployctl.edges.kube.cluster import Cluster, ClusterError, PodProblem
from deployctl.edges.kube.locks import LeaseLocks
from deployctl.edges.kube.resources import collection_path
from deployctl.edges.kube.shards import SlotLeases
from deployctl.errors import DeployctlError
from deployctl.model.audit import AttemptEvent, AuditRecord
from deployctl.model.state import DesiredState
from deployctl.model.vocabulary import ExitCode
from deployctl.model.workload import Workload
from deployctl.reconcile.observe import ClusterPool
from deployctl.reconcile.ports import Watch, Workloads
from deployctl.reconcile.recorder import AuditRecorder
from deployctl.reconcile.sink import AttemptItem, DecisionItem, FinishItem
from deployctl.rules.shards import fence_value, parse_fence, slot_of, supersedes

log = structlog.get_logger(__name__)

FENCE_ANNOTATION = "deployctl.dev/fence"


class FenceError(DeployctlError):
    """An apply was refused: its slot is no longer held in time, or the workload carries a newer token."""

    exit_code = ExitCode.FAILED


class ShardRuns:
    """The sharded part of the controller's runs, over this replica's :class:`SlotLeases`."""

    def __init__(self, leases: SlotLeases) -> None:
        self.leases = leases
        self.slots = leases.config.slots
        self.set_name = leases.config.name
        self._busy: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        self.keys_per_slot: Counter[int] = Counter()  # of the last desired state read: (env, app) keys by slot

    def slot(self, env: str, app: str) -> int:
        return slot_of(env, app, self.slots)

    def busy(self, slot: int) -> bool:
        with self._lock:
            return slot in self._busy

    def begin(self, desired: DesiredState) -> DesiredState:
        """``desired`` cut down to the keys of the slots held now; those slots stay busy until :meth:`end`."""
        owned = self.leases.owned()
        with self._lock:
            self._busy = owned
            self.keys_per_slot = Counter(self.slot(t.env, t.app) for t in desired.targets)

        def mine(env: str | None, app: str | None) -> bool:
            return env is None or app is None or self.slot(env, app) in owned

        targets = tuple(t for t in desired.targets if self.slot(t.env, t.app) in owned)
        problems = tuple(p for p in desired.problems if mine(p.env, p.app))
        log.info("shards.run", slots=sorted(owned), keys=len(targets))
        return replace(desired, targets=targets, problems=problems)

    def end(self) -> None:
        with self._lock:
            self._busy = frozenset()

    def clusters(self, pool: ClusterPool, desired: DesiredState) -> FencedClusters:
        envs: dict[tuple[str | None, str], str] = {}
        if desired.config is not None:
            for name, env in desired.config.environments.items():
                envs[(env.context, env.namespace)] = name
        return FencedClusters(pool, self, envs)

    def locks(self, pool: ClusterPool, desired: DesiredState) -> LeaseLocks:
        """The app locks of a run, each taken with the fence of its app's slot: a replica that took a slot
        over takes the app locks its earlier holder left at once (that holder stopped acting before)."""
        envs: dict[tuple[str | None, str], str] = {}
        if desired.config is not None:
            for name, env in desired.config.environments.items():
                envs[(env.context, env.namespace)] = name

        def fence(context: str | None, namespace: str, app: str) -> str | None:
            env = envs.get((context, namespace))
            if env is None:
                return None
            slot, token = self.fence(env, app)
            return fence_value(self.set_name, slot, token)

        return LeaseLocks(pool, fence=fence, supersedes=supersedes)

    def audit(self, recorder: AuditRecorder) -> FencedAudit:
        return FencedAudit(recorder, self)

    def fence(self, env: str, app: str) -> tuple[int, int]:
        """(slot, token) to write ``env``/``app`` with; raises :class:`FenceError` once the slot is not held in time."""
        slot = self.slot(env, app)
        token = self.leases.token(slot)
        if token is None:
            raise FenceError(f"slot {slot} of {env}/{app} is no longer held by this replica (its lease was not "
                             "renewed in time or was handed back); not writing")
        return slot, token


class FencedWorkloads:
    """One cluster whose applies are fenced; everything else goes to the cluster as it is."""

    def __init__(self, cluster: Cluster, runs: ShardRuns, envs: Mapping[str, str]) -> None:
        self.cluster = cluster
        self.runs = runs
        self.envs = envs  # namespace -> environment, in this cluster

    @property
    def server(self) -> str:
        return self.cluster.server

    @property
    def requests(self) -> Mapping[str, int]:
        return self.cluster.requests

    def list_kind(self, namespace: str, kind: str) -> list[Workload]:
        return self.cluster.list_kind(namespace, kind)

    def observe_kind(self, namespace: str, kind: str) -> tuple[list[Workload], str]:
        return self.cluster.observe_kind(namespace, kind)

    def read_workloads(self, namespace: str, kind: str, names: Collection[str]) -> dict[str, Workload]:
        return self.cluster.read_workloads(namespace, kind, names)

    def pod_problems(self, workload: Workload, *, limit: int = 3) -> list[PodProblem]:
        return self.cluster.pod_problems(workload, limit=limit)

    def read_batch(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cluster.read_batch(kind, namespace, name)

    def create_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A pre-deploy Job: created under the app's lock, before the fenced apply (not fenced itself)."""
        return self.cluster.create_job(body)

    def watch(self, namespace: str, kind: str, *, on_change: Callable[[Workload], None],
              items: list[Workload] | None = None, resource_version: str = "", deadline: float | None = None) -> Watch:
        return self.cluster.watch(namespace, kind, on_change=on_change, items=items, resource_version=resource_version,
                                  deadline=deadline)

    def apply_image(self, workload: Workload, *, container: str, image: str,
                    annotations: Mapping[str, str]) -> Workload:
        """Apply with this replica's token of the workload's slot, only over an older or equal one, with the
        resourceVersion compared as a precondition (a write in between makes it read and compare again)."""
        env = self.envs.get(workload.namespace)
        if env is None:
            raise FenceError(f"{workload.ref} in {workload.namespace}: no environment of this run is there; not writing")
        current = workload
        for _ in range(5):
            slot, token = self.runs.fence(env, workload.app)
            found = parse_fence(current.annotations.get(FENCE_ANNOTATION), self.runs.set_name)
            if found is not None and found[1] == slot and found[2] > token:
                log.warning("shards.fence_refused", env=env, app=workload.app, slot=slot, token=token, newer=found[2])
                raise FenceError(f"{env}/{workload.app}: the workload carries fencing token {found[2]} of slot {slot}, "
                                 f"newer than this replica's {token}; another replica took the slot; not writing")
            fenced = {**annotations, FENCE_ANNOTATION: fence_value(self.runs.set_name, slot, token)}
            try:
                return self.cluster.apply_image(current, container=container, image=image, annotations=fenced,
                                                resource_version=current.resource_version)
            except ClusterError as exc:
                if exc.status != 409:
                    raise
            current = self._read(current)
        raise FenceError(f"{env}/{workload.app}: the workload kept changing under the apply; not written")

    def _read(self, workload: Workload) -> Workload:
        path = f"{collection_path(workload.kind, workload.namespace)}/{workload.name}"
        answer = self.cluster.request("GET", path, what=f"get {workload.ref} in {workload.namespace}")
        return Workload.from_object(answer, workload.kind)


class FencedClusters:
    """The clusters of a sharded run: each one's applies fenced (see :class:`FencedWorkloads`)."""

    def __init__(self, pool: ClusterPool, runs: ShardRuns, envs: Mapping[tuple[str | None, str], str]) -> None:
        self.pool = pool
        self.runs = runs
        self.envs = envs

    def __call__(self, context: str | None) -> Workloads:
        by_namespace = {ns: env for (ctx, ns), env in self.envs.items() if ctx == context}
        return FencedWorkloads(self.pool(context), self.runs, by_namespace)

    def context_name(self, context: str | None) -> str | None:
        return self.pool.context_name(context)

    def requests(self) -> dict[str, int]:
        return self.pool.requests()


class FencedAudit:
    """The run's audit, each attempt recorded with the fencing token of its slot in ``lock_holder``
    (``<identity> fence=<set>/<slot>:<token>``); an attempt whose slot is not held in time is refused.
    A wave's attempts go in one write whatever slots they are in."""

    def __init__(self, recorder: AuditRecorder, runs: ShardRuns) -> None:
        self.recorder = recorder
        self.runs = runs

    def _holder(self, env: str, app: str) -> str:
        slot, token = self.runs.fence(env, app)
        return f"{self.recorder.lock_holder} fence={fence_value(self.runs.set_name, slot, token)}"

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        holders = [self._holder(change.env, change.app) for change, _ in items]
        return self.recorder.attempts_started(items, deploy_commit=deploy_commit, holders=holders)

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        holders = [self._holder(change.env, change.app) for change, *_rest in items]
        return self.recorder.decisions(items, deploy_commit=deploy_commit, holders=holders)

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        self.recorder.attempts_finished(items)

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        self.recorder.rollout_events(events)

    def close_interrupted(self, *, env: str | None = None, apps: Sequence[str] | None = None) -> list[int]:
        return self.recorder.close_interrupted(env=env, apps=apps)

    def open_attempts(self, envs: Sequence[str]) -> list[AuditRecord]:
        return self.recorder.open_attempts(envs)

    def close_abandoned(self, attempt_ids: Sequence[int]) -> list[int]:
        return self.recorder.close_abandoned(attempt_ids)


class ShardSyncTarget:
    """What the webhook endpoint drives on a sharded replica: a push it takes is also announced to the other
    replicas through the membership Leases, so each fetches the slots it holds."""

    def __init__(self, controller: SyncTargetLike, leases: SlotLeases) -> None:
        self.controller = controller
        self.leases = leases

    def request_sync(self, trigger: str, *, sha: str | None = None) -> None:
        self.controller.request_sync(trigger, sha=sha)
        if trigger == "webhook":
            self.leases.announce(sha)

    def ready(self) -> tuple[bool, str]:
        return self.controller.ready()

    def health(self) -> tuple[bool, str]:
        return self.controller.health()

    def may_act(self) -> bool:
        return self.controller.may_act()


class SyncTargetLike(Protocol):
    def request_sync(self, trigger: str, *, sha: str | None = None) -> None: ...

    def ready(self) -> tuple[bool, str]: ...

    def health(self) -> tuple[bool, str]: ...

    def may_act(self) -> bool: ...


class ShardCollector:
    """Prometheus metrics of this replica's slots: held, unowned (by any live replica), the apps in unowned
    slots and for how long, handovers."""

    def __init__(self, leases: SlotLeases, runs: ShardRuns) -> None:
        self.leases = leases
        self.runs = runs

    def collect(self) -> Iterator[Metric]:
        members, owners = self.leases.view()
        held = GaugeMetricFamily("deployctl_shard_slots_held", "Slots this replica holds and renewed in time.")
        held.add_metric([], len(self.leases.owned()))
        unowned = GaugeMetricFamily("deployctl_shard_slots_unowned",
                                    "Slots no live replica held at this replica's last read of the slot leases.")
        unowned.add_metric([], self.leases.config.slots - len(owners) if members else self.leases.config.slots)
        live = GaugeMetricFamily("deployctl_shard_members", "Live replicas (membership leases) at the last read.")
        live.add_metric([], len(members))
        handovers = CounterMetricFamily("deployctl_shard_handovers", "Slots this replica handed back or lost.")
        handovers.add_metric([], self.leases.handovers)
        slots_unowned = self.leases.unowned() if members else {}
        per_slot = self.runs.keys_per_slot
        apps = GaugeMetricFamily("deployctl_shard_apps_unowned",
                                 "App-environments of the last desired state read whose slot no live replica held "
                                 "at this replica's last read of the slot leases (0 beyond one lease duration).")
        apps.add_metric([], sum(per_slot[s] for s in slots_unowned))
        longest = GaugeMetricFamily("deployctl_shard_apps_unowned_seconds",
                                    "How long the slot with apps that has gone longest without a live holder has "
                                    "gone so (0: every slot with apps is held).")
        longest.add_metric([], max((t for s, t in slots_unowned.items() if per_slot[s]), default=0.0))
        yield from (held, unowned, live, handovers, apps, longest)
