"""One writer per app: a Lease per app in the app's namespace, held only while a run writes the app.

CI runs (``deployctl reconcile``) and controller replicas take the same locks, so they never write one app at
once, while two apps of one environment are written in parallel. See :class:`LeaseLocks`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from deployctl.edges.kube.cluster import Cluster
from deployctl.edges.kube.lease import _micro_time
from deployctl.errors import DeployctlError, KubeConflictError, KubeForbiddenError, KubeNotFoundError

log = structlog.get_logger(__name__)

LOCK_PREFIX = "deployctl-lock-"
LOCK_LABEL = "deployctl.dev/lock"  # on an app lock Lease: the app it locks (a label value may hold any app name)
FENCE_ANNOTATION = "deployctl.dev/fence"  # on an app lock Lease taken by a sharded replica: its slot's token
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def printable(text: str, limit: int = 200) -> str:
    """A string read from a Lease (anyone who may write it wrote it), safe to print on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])


def lock_name(app: str) -> str:
    """The app lock's Lease name: ``deployctl-lock-<app>``, or a hash of the app when its name cannot be one."""
    if _DNS_LABEL.fullmatch(app) and len(app) <= 200:
        return LOCK_PREFIX + app
    return f"{LOCK_PREFIX}h-{hashlib.sha256(app.encode()).hexdigest()[:20]}"


@dataclass(frozen=True)
class LockHolder:
    identity: str | None
    since: str | None  # the Lease's acquireTime, as the API server wrote it
    lease: str = ""  # namespace/name of the lock Lease


# A fence of a sharded replica is "<set>/<slot>:<token>" (deployctl.rules.shards.fence_value): a lock
# taken under a newer token of the same slot supersedes one taken under an older token, because the
# replica that held the older one stopped acting by its renew deadline, before the slot could be taken.


class AppLock:
    """One app's lock, held: renewed by its :class:`LeaseLocks` until :meth:`release`."""

    def __init__(self, owner: LeaseLocks, cluster: Cluster, namespace: str, name: str, lease: dict[str, Any],
                 valid_until: float) -> None:
        self.owner = owner
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.lease = lease
        self.valid_until = valid_until
        self.released = False

    def held(self) -> bool:
        """True while the lock is ours and renewed within its renew deadline."""
        return not self.released and time.monotonic() < self.valid_until

    def release(self) -> None:
        """Delete the Lease (as of our last write: a lock somebody else took meanwhile stays theirs)."""
        self.owner.release(self)


class LeaseLocks:
    """One writer per app, across CI runs and controller replicas: the Lease ``deployctl-lock-<app>`` in the
    app's namespace, held only while a run writes that app.

    A lock costs nothing when nothing changes; an app that is written costs one create when its Lease is
    free (a released lock is deleted) and one delete after, plus a renewal every third of the lease while
    its rollout is waited for. A Lease left by a holder that died is taken once its record has not changed
    for its duration on this process's clock (as :class:`LeaderElector` does), or at once by a sharded
    replica whose ``fence`` supersedes the one the holder wrote (``supersedes``)."""

    def __init__(self, clusters: Callable[[str | None], Cluster], *, fence: Callable[[str | None, str, str], str | None]
                 | None = None, supersedes: Callable[[str | None, str | None], bool] | None = None) -> None:
        self.clusters = clusters
        self.fence = fence  # (context, namespace, app) -> this replica's fence for the app, if sharded
        self.supersedes = supersedes  # (our fence, the holder's fence) -> may we take the holder's lock now
        self._seen: dict[tuple[str, str], tuple[tuple[Any, ...], float]] = {}  # (ns, name) -> (record, first seen)
        self._held: list[AppLock] = []
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._lease = 15.0

    def try_take(self, context: str | None, namespace: str, app: str, *, identity: str,
                 lease: float) -> AppLock | LockHolder:
        """One try at ``app``'s lock: the lock, now ours, or the holder that keeps it."""
        return self._take(context, namespace, app, identity=identity, lease=lease, gone=None)

    def take_if_gone(self, context: str | None, namespace: str, app: str, *, holder: str | None, identity: str,
                     lease: float) -> AppLock | LockHolder:
        """One try at ``app``'s lock on behalf of an attempt that ``holder`` left open: the lock, now ours, when
        it was free, expired, or still ``holder``'s but not renewed for two of its durations by this machine's
        clock (one run cannot wait a lease out; the second duration allows for clock skew); else the holder
        that keeps it (another run: ``holder`` is gone; ``holder`` itself: it is alive)."""
        return self._take(context, namespace, app, identity=identity, lease=lease, gone=holder or "")

    def _take(self, context: str | None, namespace: str, app: str, *, identity: str, lease: float,
              gone: str | None) -> AppLock | LockHolder:
        cluster = self.clusters(context)
        name = lock_name(app)
        url = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        fence = self.fence(context, namespace, app) if self.fence is not None else None
        now = _micro_time(datetime.now(UTC))
        spec = {"holderIdentity": identity, "leaseDurationSeconds": max(1, round(lease)), "acquireTime": now,
                "renewTime": now, "leaseTransitions": 0}
        metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": {LOCK_LABEL: _label(app)}}
        if fence is not None:
            metadata["annotations"] = {FENCE_ANNOTATION: fence}
        at = time.monotonic()
        try:
            try:
                written = cluster.transport.request(
                    "POST", url, what=f"create lock lease {namespace}/{name}", timeout=lease / 3,
                    body={"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec})
            except KubeConflictError:  # it exists: free, expired, superseded, or held
                found = cluster.transport.request("GET", f"{url}/{name}", what=f"get lock lease {namespace}/{name}",
                                                  timeout=lease / 3)
                holder = self._holder_keeps(namespace, name, found, fence, at, identity, gone)
                if holder is not None:
                    return holder
                old = found.get("spec") or {}
                spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
                annotations = {k: v for k, v in ((found["metadata"].get("annotations") or {}).items())
                               if k != FENCE_ANNOTATION}
                if fence is not None:
                    annotations[FENCE_ANNOTATION] = fence
                body = {**found, "metadata": {**found["metadata"], "annotations": annotations}, "spec": spec}
                written = cluster.transport.request(  # carries the resourceVersion read: 409 if raced
                    "PUT", f"{url}/{name}", what=f"take lock lease {namespace}/{name}", body=body, timeout=lease / 3)
        except (KubeConflictError, KubeNotFoundError):  # another run took it, or released it, between our calls
            return LockHolder(None, None, f"{namespace}/{name}")
        except KubeForbiddenError as exc:
            raise KubeForbiddenError(f"{exc}; the app locks need create, get, update and delete on leases in "
                                     f"namespace {namespace} (deploy/rbac-managed-namespace.yaml)", status=403) from exc
        lock = AppLock(self, cluster, namespace, name, written, at + lease * 2 / 3)
        with self._lock:
            self._held.append(lock)
            self._lease = lease
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew, name="deployctl-app-locks", daemon=True)
                self._renewer.start()
        return lock

    def _holder_keeps(self, namespace: str, name: str, found: dict[str, Any], fence: str | None,
                      at: float, identity: str, gone: str | None = None) -> LockHolder | None:
        """The holder of ``found`` while it keeps the lock; None when we may take it (``gone``: a holder
        whose record not renewed for two durations by this machine's clock counts as expired at once)."""
        spec = found.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        key = (namespace, name)
        seen = self._seen.get(key)
        if seen is None or seen[0] != record:
            seen = (record, at)
            self._seen[key] = seen
        if not holder or holder == identity or at >= seen[1] + float(spec.get("leaseDurationSeconds") or 15):
            return None  # free, our own create that timed out on the way back, or expired
        if gone is not None and holder == gone and _stale(spec):
            return None
        theirs = (found["metadata"].get("annotations") or {}).get(FENCE_ANNOTATION)
        if fence is not None and self.supersedes is not None and self.supersedes(fence, theirs):
            log.info("lock.superseded", lease=f"{namespace}/{name}", holder=holder, fence=theirs, ours=fence)
            return None
        return LockHolder(holder, spec.get("acquireTime"), f"{namespace}/{name}")

    def _renew(self) -> None:
        """Renew every held lock every third of the lease, until none is held. A round is due a third of the
        lease after the previous one *started*: a slow round (a thousand locks held while their rollouts are
        waited for, a loaded API server) must not push the next one later, or the locks lapse (each is valid
        for two thirds of the lease after its last renewal)."""
        due = time.monotonic()
        while True:
            with self._lock:
                period = self._lease / 3
            due = max(due + period, time.monotonic())  # a round longer than the period: the next one at once
            time.sleep(max(0.0, due - time.monotonic()))
            with self._lock:
                held = [lock for lock in self._held if not lock.released]
                self._held = held
                if not held:
                    self._renewer = None
                    return
            # in parallel: a run waiting for many rollouts holds many locks, each due within its renew deadline
            with ThreadPoolExecutor(max_workers=min(8, len(held)), thread_name_prefix="deployctl-lock-renew") as pool:
                list(pool.map(self._renew_one, held))

    def _renew_one(self, lock: AppLock) -> None:
        if lock.released:
            return
        at = time.monotonic()
        url = f"/apis/coordination.k8s.io/v1/namespaces/{lock.namespace}/leases/{lock.name}"
        try:
            try:
                written = self._put_renewal(lock, lock.lease)
            except KubeConflictError:  # changed since our last write: ours still if our own renewal timed out late
                found = lock.cluster.transport.request("GET", url, what=f"get lock lease {lock.namespace}/{lock.name}",
                                                       timeout=self._lease / 3)
                if (found.get("spec") or {}).get("holderIdentity") != (lock.lease.get("spec") or {}).get(
                        "holderIdentity"):
                    raise
                written = self._put_renewal(lock, found)
        except (KubeConflictError, KubeNotFoundError):
            if not lock.released:  # (released meanwhile: deleted by us, not lost)
                log.warning("lock.lost", lease=f"{lock.namespace}/{lock.name}")
                lock.valid_until = 0.0
            return
        except DeployctlError as exc:
            log.info("lock.renew_failed", lease=f"{lock.namespace}/{lock.name}", error=str(exc))
            return
        with self._lock:
            if not lock.released:
                lock.lease = written
                lock.valid_until = at + self._lease * 2 / 3

    def _put_renewal(self, lock: AppLock, lease: dict[str, Any]) -> dict[str, Any]:
        spec = {**(lease.get("spec") or {}), "renewTime": _micro_time(datetime.now(UTC))}
        return lock.cluster.transport.request(
            "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{lock.namespace}/leases/{lock.name}",
            what=f"renew lock lease {lock.namespace}/{lock.name}", body={**lease, "spec": spec}, timeout=self._lease / 3)

    def release(self, lock: AppLock) -> None:
        with self._lock:
            if lock.released:
                return
            lock.released = True
            version = (lock.lease.get("metadata") or {}).get("resourceVersion")
        url = f"/apis/coordination.k8s.io/v1/namespaces/{lock.namespace}/leases/{lock.name}"
        what = f"release lock lease {lock.namespace}/{lock.name}"
        try:
            for _ in range(2):
                try:
                    lock.cluster.transport.request(
                        "DELETE", url, what=what, timeout=self._lease / 3,
                        body={"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"resourceVersion": version}})
                    return
                except KubeConflictError:  # changed since our last write: still ours if a renewal timed out late
                    found = lock.cluster.transport.request("GET", url, what=what, timeout=self._lease / 3)
                    if (found.get("spec") or {}).get("holderIdentity") != (lock.lease.get("spec") or {}).get(
                            "holderIdentity"):
                        return  # somebody took it after ours lapsed: theirs now
                    version = (found.get("metadata") or {}).get("resourceVersion")
        except KubeNotFoundError:
            pass
        except DeployctlError as exc:
            log.warning("lock.release_failed", lease=f"{lock.namespace}/{lock.name}", error=str(exc))


def _stale(spec: dict[str, Any]) -> bool:
    """True when a Lease's renewTime is older than two of its durations by this machine's clock."""
    try:
        renewed = datetime.fromisoformat(str(spec.get("renewTime") or "").replace("Z", "+00:00"))
        duration = float(spec.get("leaseDurationSeconds") or 15)
    except ValueError:
        return False
    if renewed.tzinfo is None:
        renewed = renewed.replace(tzinfo=UTC)
    return (datetime.now(UTC) - renewed).total_seconds() > 2 * duration


def _label(app: str) -> str:
    """``app`` as a label value (63 characters of [A-Za-z0-9._-]), else a hash of it."""
    if re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", app):
        return app
    return "h-" + hashlib.sha256(app.encode()).hexdigest()[:40]
