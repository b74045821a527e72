"""An in-memory cluster, environment locks and audit sink implementing reconcile's ports
(:mod:`deployctl.reconcile.ports`, :mod:`deployctl.reconcile.sink`), for unit tests of the reconciler.

The real API server stays the evidence that reconcile works (tests/integration); these fakes make the
decisions around it (dependency order, timeouts, refusals, a failing audit store, a lost lock) quick
unit tests. A workload's rollout is decided per app: ``healthy`` (rolled out as soon as applied),
``stuck`` (never progresses) or ``failed`` (ProgressDeadlineExceeded).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deployctl.edges.kube.cluster import PodProblem
from deployctl.edges.kube.locks import LockHolder
from deployctl.errors import DeployctlError, KubeConflictError
from deployctl.model.audit import AttemptEvent, AuditRecord
from deployctl.model.config import AppConfig, Config, EnvironmentConfig
from deployctl.model.state import DesiredState, Target
from deployctl.model.workload import APP_LABEL, Workload
from deployctl.reconcile.sink import AttemptItem, DecisionItem, FinishItem

IMAGE = "registry.example.com/shop"
DEPLOY_COMMIT = "d" * 40


def sha(n: int) -> str:
    return f"{n:x}" * 40 if n < 16 else f"{n:040x}"


def deployment(app: str, image: str, *, namespace: str, replicas: int = 2) -> Workload:
    """A labelled Deployment, fully rolled out on ``image``."""
    return Workload(kind="Deployment", namespace=namespace, name=app, app=app, images={app: image},
                    annotations={}, generation=1, observed_generation=1, replicas=replicas,
                    status_replicas=replicas, updated_replicas=replicas, ready_replicas=replicas,
                    available_replicas=replicas, selector={"app": app})


def desired_state(apps: Mapping[str, tuple[str, ...]], *, env: str = "staging", new: int = 2,
                  context: str | None = None) -> DesiredState:
    """``apps`` (name -> depends_on) in one environment, each at commit ``sha(new)`` with pin ``tag``
    (no registry); no deploy commit, so no git history is read."""
    namespace = f"ns-{env}"
    config = Config(version=1, apps={a: AppConfig(name=a, image=f"{IMAGE}/{a}", pin="tag", depends_on=deps)
                                     for a, deps in apps.items()},
                    environments={env: EnvironmentConfig(name=env, namespace=namespace, context=context)})
    targets = tuple(Target(env=env, app=a, sha=sha(new), image=f"{IMAGE}/{a}:{sha(new)}", namespace=namespace,
                           container=a, path=f"environments/{env}/{a}.deploy", line=1, depends_on=deps,
                           context=context)
                    for a, deps in sorted(apps.items()))
    return DesiredState(config=config, targets=targets, problems=(), ref="HEAD", commit=None)


class FakeWatch:
    """A watch of one namespace and kind: reads the fake cluster's objects, hears of every apply."""

    def __init__(self, cluster: FakeCluster, namespace: str, kind: str, on_change: Callable[[Workload], None]) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.kind = kind
        self.on_change = on_change
        self.stopped = False

    def items(self) -> dict[str, Workload]:
        return {w.name: w for w in self.cluster.list_kind(self.namespace, self.kind, count=False)}

    def stop(self) -> None:
        self.stopped = True


class FakeCluster:
    """One cluster in memory: the workloads, how each app rolls out, and what was applied, in order."""

    server = "https://fake.invalid"

    def __init__(self, *workloads: Workload) -> None:
        self.objects: dict[tuple[str, str, str], Workload] = {(w.namespace, w.kind, w.name): w for w in workloads}
        self.rollout: dict[str, str] = {}  # app -> healthy (default), stuck or failed
        self.applied: list[str] = []  # apps, in the order their workloads were applied
        self.after_apply: Callable[[Workload], None] | None = None  # a test's hook (e.g. lose a lock)
        self.watches: list[FakeWatch] = []
        self.batch: dict[tuple[str, str, str], dict[str, Any]] = {}  # (namespace, kind, name) -> Job or CronJob
        self.job_outcome: dict[str, str] = {}  # app -> Complete (default) or Failed: what its created Jobs do
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def requests(self) -> Counter[str]:
        return Counter(self._counts)

    def list_kind(self, namespace: str, kind: str, *, count: bool = True) -> list[Workload]:
        with self._lock:
            if count:
                self._counts["GET"] += 1
            return [w for (ns, k, _), w in sorted(self.objects.items()) if ns == namespace and k == kind]

    def observe_kind(self, namespace: str, kind: str) -> tuple[list[Workload], str]:
        return self.list_kind(namespace, kind), "1"

    def read_workloads(self, namespace: str, kind: str, names: Collection[str]) -> dict[str, Workload]:
        return {w.name: w for w in self.list_kind(namespace, kind) if w.name in names}

    def apply_image(self, workload: Workload, *, container: str, image: str,
                    annotations: Mapping[str, str]) -> Workload:
        key = (workload.namespace, workload.kind, workload.name)
        with self._lock:
            self._counts["PATCH"] += 1
            old = self.objects[key]
            spec = replace(old, images={**old.images, container: image}, annotations={**old.annotations, **annotations},
                           generation=old.generation + 1)
            self.objects[key] = self._rolled_out(spec)
            self.applied.append(old.app)
            watches = [w for w in self.watches if (w.namespace, w.kind) == key[:2] and not w.stopped]
        for watch in watches:
            watch.on_change(self.objects[key])
        if self.after_apply is not None:
            self.after_apply(spec)
        return spec  # as the API answers an apply: the new generation, not yet observed

    def _rolled_out(self, w: Workload) -> Workload:
        """``w`` as the workload controller leaves it, per the app's rollout mode."""
        mode = self.rollout.get(w.app, "healthy")
        if mode == "stuck":
            return replace(w, observed_generation=w.generation, updated_replicas=0)
        if mode == "failed":
            return replace(w, observed_generation=w.generation, updated_replicas=0, conditions=(
                {"type": "Progressing", "reason": "ProgressDeadlineExceeded",
                 "message": f'ReplicaSet "{w.name}-2" has timed out progressing.'},))
        return replace(w, observed_generation=w.generation)

    def read_batch(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self._counts["GET"] += 1
            return self.batch.get((namespace, kind, name))

    def create_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Job that has run at once: Complete, or Failed (BackoffLimitExceeded) per its app."""
        meta = body["metadata"]
        key = (meta["namespace"], "Job", meta["name"])
        outcome = self.job_outcome.get(meta["labels"][APP_LABEL], "Complete")
        reason = {"Failed": "BackoffLimitExceeded"}.get(outcome, "")
        job = {**body, "status": {"conditions": [{"type": outcome, "status": "True", "reason": reason}]}}
        with self._lock:
            self._counts["POST"] += 1
            if key in self.batch:
                raise KubeConflictError(f"job {meta['name']} exists")
            self.batch[key] = job
            self.applied.append(f"job/{meta['name']}")
        return job

    def pod_problems(self, workload: Workload, *, limit: int = 3) -> list[PodProblem]:
        return [PodProblem(f"{workload.name}-2-x", "CrashLoopBackOff")][:limit]

    def watch(self, namespace: str, kind: str, *, on_change: Callable[[Workload], None],
              items: list[Workload] | None = None, resource_version: str = "",
              deadline: float | None = None) -> FakeWatch:
        watch = FakeWatch(self, namespace, kind, on_change)
        with self._lock:
            self._counts["WATCH"] += 1
            self.watches.append(watch)
        return watch


class FakeClusters:
    """The :class:`~deployctl.reconcile.ports.Clusters` of a run: one fake cluster per context."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def __call__(self, context: str | None) -> FakeCluster:
        return self.cluster

    def context_name(self, context: str | None) -> str | None:
        return context or "fake"

    def requests(self) -> dict[str, int]:
        return dict(self.cluster.requests)


@dataclass
class FakeLock:
    namespace: str
    app: str
    lost: bool = False
    released: bool = False

    def held(self) -> bool:
        return not self.lost and not self.released

    def release(self) -> None:
        self.released = True


@dataclass
class FakeLocks:
    """App locks in memory: free unless ``busy`` names the app's holder; a test loses one with ``.lost = True``."""

    taken: list[FakeLock] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)  # app -> the other run holding it

    def try_take(self, context: str | None, namespace: str, app: str, *, identity: str,
                 lease: float) -> FakeLock | LockHolder:
        if app in self.busy:
            return LockHolder(self.busy[app], "2026-01-01T10:00:00Z", f"{namespace}/deployctl-lock-{app}")
        lock = FakeLock(namespace, app)
        self.taken.append(lock)
        return lock

    def take_if_gone(self, context: str | None, namespace: str, app: str, *, holder: str | None, identity: str,
                     lease: float) -> FakeLock | LockHolder:
        return self.try_take(context, namespace, app, identity=identity, lease=lease)


class FakeAudit:
    """An audit sink in memory, whose writes start failing after ``fail_after`` successful ones."""

    def __init__(self, *, fail_after: int | None = None) -> None:
        self.started: list[tuple[int, str, str]] = []  # (id, env, app)
        self.finished: dict[int, tuple[str, str | None]] = {}  # id -> (result, error)
        self.events: list[AttemptEvent] = []
        self.fail_after = fail_after
        self.writes = 0
        self._lock = threading.Lock()

    def _write(self) -> None:
        if self.fail_after is not None and self.writes >= self.fail_after:
            raise DeployctlError("audit store: database is locked")
        self.writes += 1

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        with self._lock:
            self._write()
            ids: list[int | None] = []
            for change, _ in items:
                ids.append(len(self.started) + 1)
                self.started.append((len(self.started) + 1, change.env, change.app))
            return ids

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        with self._lock:
            self._write()
            for attempt_id, result, error in items:
                if attempt_id is not None:
                    self.finished[attempt_id] = (str(result), error)

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        """A decision taken without an apply: its attempt and outcome in one write."""
        with self._lock:
            self._write()
            ids: list[int | None] = []
            for change, _, result, error in items:
                attempt_id = len(self.started) + 1
                self.started.append((attempt_id, change.env, change.app))
                self.finished[attempt_id] = (str(result), error)
                ids.append(attempt_id)
            return ids

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        with self._lock:
            self._write()
            self.events.extend(events)

    def close_interrupted(self, *, env: str | None = None, apps: Sequence[str] | None = None) -> list[int]:
        return []

    def open_attempts(self, envs: Sequence[str]) -> list[AuditRecord]:
        return []

    def close_abandoned(self, attempt_ids: Sequence[int]) -> list[int]:
        return []

    def result_of(self, app: str) -> str | None:
        """The recorded result of ``app``'s last attempt (None: no attempt, or still open)."""
        ids = [i for i, _, a in self.started if a == app]
        return self.finished.get(ids[-1], (None, None))[0] if ids else None
