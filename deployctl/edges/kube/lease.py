"""Leader election with a ``coordination.k8s.io/v1`` Lease, the way client-go does it.

Only the holder of the Lease acts. A candidate takes the Lease when it is free (no holder, as
left by a clean release) or when its record has not changed for ``lease_duration`` as
observed on the candidate's own clock (so clock skew between replicas does not matter).
Every write carries the ``resourceVersion`` that was read, so two candidates never both win.
A leader that cannot renew within ``renew_deadline`` (shorter than ``lease_duration``) stops
counting itself leader at once, before anybody else may take over: :meth:`LeaderElector.is_leader`
is checked before every write the controller makes.

The leader also writes the URL at which it takes forwarded webhooks into the Lease (annotation
``deployctl.dev/leader-address``), so a standby can hand a webhook on to it
(:meth:`LeaderElector.leader_address`).

The API calls go through :class:`deployctl.edges.kube.cluster.Cluster` as raw JSON.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from deployctl.edges.kube.cluster import Cluster
from deployctl.errors import DeployctlError, InvalidInputError

log = structlog.get_logger(__name__)

ADDRESS_ANNOTATION = "deployctl.dev/leader-address"


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    address: str | None = None  # where this replica takes forwarded webhooks (written while it leads)

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise InvalidInputError(
                "leader election needs lease duration > renew deadline > retry period > 0 "
                f"(got {self.lease_duration}s, {self.renew_deadline}s, {self.retry_period}s)"
            )


def _micro_time(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquire, renew and release one Lease; run :meth:`run` in a thread of its own."""

    def __init__(
        self,
        cluster: Cluster,
        config: LeaseConfig,
        *,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.monotonic = monotonic
        self.now = now
        self._lock = threading.Lock()
        self._valid_until = 0.0  # monotonic time until which we may act as leader
        self._leader = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._observed_address: str | None = None
        self._stop = threading.Event()
        self._round = threading.Lock()  # one acquire/renew round at a time: release never races a renewal

    # -- state --------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True while we hold the Lease and renewed it within the renew deadline."""
        with self._lock:
            return self._leader and self.monotonic() < self._valid_until

    def holder(self) -> str | None:
        with self._lock:
            return self._observed[0] if self._observed else None

    def leader_address(self) -> tuple[str | None, str | None]:
        """(holder, its address) as last read from the Lease; (None, None) when nobody holds it.

        The Lease is read every retry period, so this may be that old; a forward to a stale
        address fails (or reaches a replica that is no longer leader, which refuses it)."""
        with self._lock:
            if not self._observed or not self._observed[0]:
                return None, None
            return self._observed[0], self._observed_address

    def _mark(self, metadata: dict[str, Any]) -> dict[str, Any]:
        annotations = dict(metadata.get("annotations") or {})
        if self.config.address:
            annotations[ADDRESS_ANNOTATION] = self.config.address
        else:
            annotations.pop(ADDRESS_ANNOTATION, None)
        return {**metadata, "annotations": annotations}

    # -- API ----------------------------------------------------------------------------------

    def _path(self) -> str:
        return f"lease {self.config.namespace}/{self.config.name}"

    def _url(self, *, collection: bool = False) -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{self.config.namespace}/leases"
        return base if collection else f"{base}/{self.config.name}"

    def _get(self) -> dict[str, Any] | None:
        try:
            return self.cluster.transport.request("GET", self._url(), what=f"get {self._path()}",
                                                  timeout=self.config.retry_period * 2)
        except DeployctlError as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    def _write(self, body: dict[str, Any], *, create: bool) -> dict[str, Any]:
        timeout = self.config.retry_period * 2
        if create:
            return self.cluster.transport.request("POST", self._url(collection=True), what=f"create {self._path()}",
                                                  body=body, timeout=timeout)
        return self.cluster.transport.request("PUT", self._url(), what=f"update {self._path()}", body=body,
                                              timeout=timeout)

    def _spec(self, *, acquire: bool, transitions: int, acquired_at: str | None) -> dict[str, Any]:
        now = _micro_time(self.now())
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
            "acquireTime": now if acquire or not acquired_at else acquired_at,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    # -- one round ----------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the Lease. Returns whether we hold it now."""
        attempt_at = self.monotonic()
        lease = self._get()
        cfg = self.config
        if lease is None:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": self._mark({"name": cfg.name, "namespace": cfg.namespace}),
                "spec": self._spec(acquire=True, transitions=0, acquired_at=None),
            }
            self._write(body, create=True)
            self._won(attempt_at, body["spec"])
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        address = ((lease.get("metadata") or {}).get("annotations") or {}).get(ADDRESS_ANNOTATION)
        with self._lock:
            self._observed_address = address if isinstance(address, str) else None
            if record != self._observed:
                self._observed = record
                self._observed_at = attempt_at
            observed_at = self._observed_at
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        mine = holder == cfg.identity
        if holder and not mine and attempt_at < observed_at + duration:
            return False  # held by someone else, not expired
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        new_spec = self._spec(acquire=not mine, transitions=transitions, acquired_at=spec.get("acquireTime"))
        lease["spec"] = new_spec
        lease["metadata"] = self._mark(lease.get("metadata") or {})
        updated = self._write(lease, create=False)  # carries the resourceVersion we read: 409 if raced
        self._won(attempt_at, new_spec)
        with self._lock:
            self._observed = (cfg.identity, new_spec["renewTime"], new_spec["leaseDurationSeconds"], transitions)
            self._observed_at = attempt_at
            self._observed_address = self.config.address
        del updated
        return True

    def _won(self, attempt_at: float, spec: dict[str, Any]) -> None:
        with self._lock:
            self._valid_until = attempt_at + self.config.renew_deadline
            was = self._leader
            self._leader = True
        if not was:
            log.info("leader.acquired", lease=self._path(), identity=self.config.identity,
                     transitions=spec.get("leaseTransitions"))
            self.on_started()

    def _lose(self, why: str) -> None:
        with self._lock:
            was = self._leader
            self._leader = False
            self._valid_until = 0.0
        if was:
            log.warning("leader.lost", lease=self._path(), identity=self.config.identity, reason=why)
            self.on_stopped()

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Try to acquire, then renew, every retry period until :meth:`stop`."""
        log.info("leader.candidate", lease=self._path(), identity=self.config.identity)
        while not self._stop.is_set():
            with self._round:
                if self._stop.is_set():
                    break
                try:
                    held = self.try_acquire_or_renew()
                except DeployctlError as exc:
                    held = False
                    log.info("leader.attempt_failed", lease=self._path(), error=str(exc))
            if not held and self._leader and not self.is_leader():
                self._lose("could not renew the lease within the renew deadline")
            elif not held and self._leader and self._observed and self._observed[0] != self.config.identity:
                self._lose(f"the lease is now held by {self._observed[0]}")
            self._stop.wait(self.config.retry_period)

    def stop(self) -> None:
        self._stop.set()

    def release(self) -> None:
        """Give the Lease up (if we hold it) so another replica takes over without waiting it out.
        Stops the loop first and waits for a round in flight, so a renewal cannot take the Lease back."""
        self._stop.set()
        with self._round, self._lock:
            was = self._leader
            self._leader = False
            self._valid_until = 0.0
        if not was:
            return
        try:
            lease = self._get()
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.config.identity:
                spec = lease["spec"]
                spec["holderIdentity"] = None
                spec["leaseDurationSeconds"] = 1
                spec["renewTime"] = _micro_time(self.now())
                annotations = (lease.get("metadata") or {}).get("annotations") or {}
                annotations.pop(ADDRESS_ANNOTATION, None)
                self._write(lease, create=False)
                log.info("leader.released", lease=self._path(), identity=self.config.identity)
        except DeployctlError as exc:
            log.warning("leader.release_failed", lease=self._path(), error=str(exc))
        self.on_stopped()
