"""Slots shared across controller replicas with ``coordination.k8s.io/v1`` Leases.

Each replica holds a membership Lease (``<set>-member-<hash of identity>``); each slot is a Lease
(``<set>-slot-NNN``) held by at most one replica. Every retry period a replica LISTs the set's Leases
(one request), renews its membership and the slots it keeps, hands back the slots over its share once
no work is in flight there, and claims free ones, as :func:`deployctl.rules.shards.moves` says.

A Lease is expired when its record has not changed for its duration as observed on this replica's own
clock (as :class:`~deployctl.edges.kube.lease.LeaderElector` does, so clock skew does not matter). Every
write carries the resourceVersion read, so two replicas never both take a slot. A replica acts on a slot
only until ``renew_deadline`` (shorter than the lease duration) after the start of its last successful
renewal: by the time anybody else may take the slot, it has stopped.

The fencing token of a slot is its Lease's ``leaseTransitions`` (bumped by every new holder).

A webhook that reaches one replica reaches the others through the Leases too: the replica writes it on its
membership Lease at its next renewal (:meth:`SlotLeases.announce`), and every other replica sees the new
value in its next LIST and fetches (``on_announced``): at most two retry periods, and no extra request.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from deployctl.edges.kube.cluster import Cluster
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.rules.shards import MAX_SLOTS, moves

log = structlog.get_logger(__name__)

SET_LABEL = "deployctl.dev/shard-set"
ROLE_LABEL = "deployctl.dev/shard-role"
SYNC_ANNOTATION = "deployctl.dev/sync-request"  # on a membership Lease: the last webhook that replica took


@dataclass(frozen=True)
class ShardConfig:
    namespace: str
    identity: str
    slots: int = 32
    name: str = "deployctl"  # the shard set: the Leases' name prefix and label
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= MAX_SLOTS:
            raise InvalidInputError(f"--shards {self.slots}: give 1 to {MAX_SLOTS} slots")
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise InvalidInputError(
                "sharding needs lease duration > renew deadline > retry period > 0 "
                f"(got {self.lease_duration}s, {self.renew_deadline}s, {self.retry_period}s)")

    def slot_lease(self, slot: int) -> str:
        return f"{self.name}-slot-{slot:03d}"

    @property
    def member_lease(self) -> str:
        return f"{self.name}-member-{hashlib.sha256(self.identity.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Held:
    token: int  # the slot Lease's leaseTransitions while we hold it: the fencing token
    valid_until: float  # monotonic time until which we may act on the slot


def _micro_time(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SlotLeases:
    """This replica's membership and slots; run :meth:`run` in a thread of its own.

    ``busy(slot)`` says whether work is in flight on a slot (a slot is handed back only once it is not);
    ``on_claimed`` hears of newly held slots (the controller reconciles them at once)."""

    def __init__(self, cluster: Cluster, config: ShardConfig, *, busy: Callable[[int], bool] = lambda s: False,
                 on_claimed: Callable[[tuple[int, ...]], None] = lambda s: None,
                 on_announced: Callable[[str | None], None] = lambda sha: None,
                 monotonic: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.cluster = cluster
        self.config = config
        self.busy = busy
        self.on_claimed = on_claimed
        self.on_announced = on_announced
        self._announce: str | None = None  # written on our membership Lease at the next renewal
        self._heard: dict[str, str | None] = {}  # another member's lease -> its sync request as last read
        self.monotonic = monotonic
        self.now = now
        self._lock = threading.Lock()
        self._held: dict[int, Held] = {}
        self._draining: set[int] = set()  # held, handed back once nothing is in flight there
        self._member_until = 0.0
        self._members: tuple[str, ...] = ()
        self._owners: dict[int, str] = {}  # slot -> live holder, as last read
        self._unowned_since: dict[int, float] = {}  # slot -> since when no live replica held it (monotonic)
        self._seen: dict[str, tuple[tuple[Any, ...], float]] = {}  # lease name -> (record, first seen at)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by the watch when a Lease of the set is freed: a round at once
        self._round = threading.Lock()
        self._writers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="deployctl-shard-writes")
        self.handovers = 0  # slots handed back or lost

    # -- state --------------------------------------------------------------------------------

    def member(self) -> bool:
        """True while our membership Lease was renewed within the renew deadline."""
        with self._lock:
            return self.monotonic() < self._member_until

    def token(self, slot: int) -> int | None:
        """The fencing token of ``slot`` while we hold it and renewed it in time, else None."""
        with self._lock:
            held = self._held.get(slot)
            return held.token if held is not None and self.monotonic() < held.valid_until else None

    def owned(self) -> frozenset[int]:
        """The slots to start work on: held, renewed in time, not being handed back."""
        now = self.monotonic()
        with self._lock:
            return frozenset(s for s, h in self._held.items() if now < h.valid_until and s not in self._draining)

    def view(self) -> tuple[tuple[str, ...], dict[int, str]]:
        """(live members, slot -> live holder) as last read: for metrics (unowned slots)."""
        with self._lock:
            return self._members, dict(self._owners)

    def unowned(self) -> dict[int, float]:
        """slot -> seconds since no live replica held it, as this replica last saw the slot Leases."""
        now = self.monotonic()
        with self._lock:
            return {s: now - since for s, since in self._unowned_since.items()}

    def _note_unowned(self, at: float, owners: dict[int, str]) -> None:
        with self._lock:
            for slot in range(self.config.slots):
                if slot in owners:
                    self._unowned_since.pop(slot, None)
                else:
                    self._unowned_since.setdefault(slot, at)

    def announce(self, sha: str | None) -> None:
        """Tell the other replicas (through our membership Lease) that a push arrived, so they fetch too."""
        with self._lock:
            self._announce = f"{uuid.uuid4().hex[:8]}:{sha or ''}"
        self._wake.set()  # written by a round now, not at the next renewal

    def _hear(self, name: str, lease: dict[str, Any]) -> None:
        value = ((lease["metadata"].get("annotations") or {}).get(SYNC_ANNOTATION)) or None
        known = name in self._heard
        previous = self._heard.get(name)
        self._heard[name] = value
        if known and value is not None and value != previous:
            sha = value.partition(":")[2]
            log.info("shards.sync_heard", lease=name, sha=sha or None)
            self.on_announced(sha or None)

    # -- API ----------------------------------------------------------------------------------

    def _url(self, name: str | None = None) -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{self.config.namespace}/leases"
        return base if name is None else f"{base}/{name}"

    def _list(self) -> list[dict[str, Any]]:
        answer = self.cluster.transport.request(
            "GET", self._url(), what=f"list shard leases in {self.config.namespace}",
            query={"labelSelector": f"{SET_LABEL}={self.config.name}"}, timeout=self.config.retry_period * 2)
        return list(answer.get("items") or [])

    def _put(self, lease: dict[str, Any]) -> dict[str, Any]:
        name = lease["metadata"]["name"]
        return self.cluster.transport.request("PUT", self._url(name), what=f"update lease {name}", body=lease,
                                              timeout=self.config.retry_period * 2)

    def _create(self, name: str, role: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": self.config.namespace,
                             "labels": {SET_LABEL: self.config.name, ROLE_LABEL: role}},
                "spec": spec}
        return self.cluster.transport.request("POST", self._url(), what=f"create lease {name}", body=body,
                                              timeout=self.config.retry_period * 2)

    def _spec(self, old: dict[str, Any], *, take: bool) -> dict[str, Any]:
        now = _micro_time(self.now())
        transitions = int(old.get("leaseTransitions") or 0) + (1 if take else 0)
        return {"holderIdentity": self.config.identity, "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
                "acquireTime": now if take or not old.get("acquireTime") else old["acquireTime"],
                "renewTime": now, "leaseTransitions": transitions}

    # -- one round ----------------------------------------------------------------------------

    def _live_holder(self, lease: dict[str, Any], at: float) -> str | None:
        """The holder of ``lease`` unless it is free or its record has not changed for its duration."""
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
        name = lease["metadata"]["name"]
        with self._lock:
            seen = self._seen.get(name)
            if seen is None or seen[0] != record:
                seen = (record, at)
                self._seen[name] = seen
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        if holder and at >= seen[1] + duration:
            log.debug("shards.lease_expired", lease=name, holder=holder, unchanged_for=round(at - seen[1], 3))
            return None
        return holder

    def round(self) -> bool:
        """List, renew membership and kept slots, hand back, claim: one request plus one write per Lease.
        True when a claim lost a race to another replica (try again soon, not a retry period later)."""
        cfg = self.config
        at = self.monotonic()
        leases = {item["metadata"]["name"]: item for item in self._list()}
        members: set[str] = set()
        owners: dict[int, str] = {}
        expired: set[str] = set()  # Leases of the set whose holder stopped renewing
        slot_of_name = {cfg.slot_lease(s): s for s in range(cfg.slots)}
        for name, lease in leases.items():
            holder = self._live_holder(lease, at)
            role = (lease["metadata"].get("labels") or {}).get(ROLE_LABEL)
            if role == "member" and holder:
                members.add(holder)
            if role == "member" and name != cfg.member_lease:
                self._hear(name, lease)
            elif name in slot_of_name and holder:
                owners[slot_of_name[name]] = holder
            if not holder and (lease.get("spec") or {}).get("holderIdentity") and name != cfg.member_lease:
                expired.add(name)  # its holder stopped renewing: freed below for everyone
        self._renew_member(leases.get(cfg.member_lease))
        members.add(cfg.identity)
        with self._lock:
            first_round = not self._members
            self._members = tuple(sorted(members))
            self._owners = dict(owners)
        # slots we think we hold but the Lease says otherwise: lost (somebody took them after we stalled)
        for slot in list(self._held):
            if owners.get(slot) != cfg.identity:
                self._drop(slot, "the slot lease is no longer ours")
        plan = moves(cfg.identity, cfg.slots, members, owners)
        # the writes of a round go out in parallel: a round (and so the next membership renewal) stays short
        # on a loaded API server
        list(self._writers.map(lambda s: self._renew_slot(s, leases[cfg.slot_lease(s)]), plan.keep))
        list(self._writers.map(lambda s: self._hand_back(s, leases[cfg.slot_lease(s)]), plan.release))
        if first_round:
            self._note_unowned(at, owners)
            return False  # claim from the next round: the other members have seen us by then
        won = list(self._writers.map(lambda s: self._claim(s, leases.get(cfg.slot_lease(s))), plan.claim))
        claimed = tuple(s for s, ok in zip(plan.claim, won, strict=True) if ok)
        # an expired Lease we did not take is freed: a replica started after its holder died saw the record
        # later than we did and would wait a lease duration of its own to take it (or to drop the holder
        # from the members), while the slot has no live holder
        taken = {cfg.slot_lease(s) for s in plan.claim}
        list(self._writers.map(lambda n: self._reap(leases[n]), sorted(expired - taken)))
        self._note_unowned(at, {**owners, **dict.fromkeys(claimed, cfg.identity)})
        if claimed:
            log.info("shards.claimed", slots=claimed, identity=cfg.identity)
            self.on_claimed(claimed)
        return len(claimed) < len(plan.claim)

    def _renew_member(self, lease: dict[str, Any] | None) -> None:
        at = self.monotonic()
        with self._lock:
            announce = self._announce
        try:
            if lease is None:
                self._create(self.config.member_lease, "member", self._spec({}, take=True))
            else:
                mine = (lease.get("spec") or {}).get("holderIdentity") == self.config.identity
                metadata = dict(lease["metadata"])
                if announce is not None:
                    metadata["annotations"] = {**(metadata.get("annotations") or {}), SYNC_ANNOTATION: announce}
                self._put({**lease, "metadata": metadata, "spec": self._spec(lease.get("spec") or {}, take=not mine)})
        except DeployctlError as exc:
            log.info("shards.member_renew_failed", error=str(exc))
            return
        with self._lock:
            self._member_until = at + self.config.renew_deadline

    def _renew_slot(self, slot: int, lease: dict[str, Any]) -> None:
        at = self.monotonic()
        try:
            written = self._put({**lease, "spec": self._spec(lease.get("spec") or {}, take=False)})
        except DeployctlError as exc:
            log.info("shards.renew_failed", slot=slot, error=str(exc))
            if getattr(exc, "status", None) == 409:
                self._drop(slot, "another replica wrote the slot lease")
            return
        token = int((written.get("spec") or {}).get("leaseTransitions") or 0)
        with self._lock:
            self._held[slot] = Held(token=token, valid_until=at + self.config.renew_deadline)

    def _claim(self, slot: int, lease: dict[str, Any] | None) -> bool:
        at = self.monotonic()
        try:
            if lease is None:
                written = self._create(self.config.slot_lease(slot), "slot", self._spec({}, take=True))
            else:
                written = self._put({**lease, "spec": self._spec(lease.get("spec") or {}, take=True)})
        except DeployctlError as exc:
            log.info("shards.claim_failed", slot=slot, error=str(exc))
            return False
        token = int((written.get("spec") or {}).get("leaseTransitions") or 0)
        with self._lock:
            self._held[slot] = Held(token=token, valid_until=at + self.config.renew_deadline)
            self._draining.discard(slot)
        return True

    def _hand_back(self, slot: int, lease: dict[str, Any]) -> None:
        """Stop starting work on ``slot``; once nothing is in flight there, free its Lease."""
        with self._lock:
            self._draining.add(slot)
        if self.busy(slot):
            self._renew_slot(slot, lease)  # keep it until the work in flight ends
            return
        self._drop(slot, "handed back")
        self._free(lease)

    def _drop(self, slot: int, why: str) -> None:
        with self._lock:
            was = self._held.pop(slot, None)
            self._draining.discard(slot)
            if was is not None:
                self.handovers += 1
        if was is not None:
            log.info("shards.slot_released", slot=slot, token=was.token, reason=why, identity=self.config.identity)

    def _free(self, lease: dict[str, Any]) -> None:
        if (lease.get("spec") or {}).get("holderIdentity") == self.config.identity:
            self._clear(lease, failed="shards.free_failed")

    def _reap(self, lease: dict[str, Any]) -> None:
        """Free another holder's Lease that we saw unchanged for its duration (its holder stopped acting a
        renew deadline after its last renewal; a claim would bump the token, freeing keeps it)."""
        if self._clear(lease, failed="shards.reap_failed"):  # else taken or freed by another replica first
            log.info("shards.reaped", lease=lease["metadata"]["name"], holder=lease["spec"].get("holderIdentity"),
                     identity=self.config.identity)

    def _clear(self, lease: dict[str, Any], *, failed: str) -> bool:
        """Write ``lease`` with no holder (as of the resourceVersion read); False, logged as ``failed``, if refused."""
        spec = {**(lease.get("spec") or {}), "holderIdentity": None, "leaseDurationSeconds": 1,
                "renewTime": _micro_time(self.now())}
        try:
            self._put({**lease, "spec": spec})
        except DeployctlError as exc:
            log.info(failed, lease=lease["metadata"]["name"], error=str(exc))
            return False
        return True

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """A round every retry period until :meth:`stop`; at once when the watch sees a Lease of the set
        freed (a replica left: its slots are taken without waiting for the next period), and soon again
        after a claim lost a race (instead of a period later)."""
        log.info("shards.member", identity=self.config.identity, slots=self.config.slots,
                 namespace=self.config.namespace)
        threading.Thread(target=self._watch, name="deployctl-shards-watch", daemon=True).start()
        while not self._stop.is_set():
            self._wake.clear()
            again = False
            with self._round:
                if self._stop.is_set():
                    break
                try:
                    again = self.round()
                except DeployctlError as exc:
                    log.info("shards.round_failed", error=str(exc))
            # soon again: jittered so that the replicas that raced do not race again in step
            self._wake.wait(self.config.retry_period / 10 * (1 + random.random()) if again
                            else self._until_next_expiry())

    def _until_next_expiry(self) -> float:
        """Seconds until the next round: a retry period, or less when another replica's Lease expires
        sooner (a replica that died: its slots are claimed as soon as they may be)."""
        now = self.monotonic()
        with self._lock:
            expiries = [at + float(record[2] or self.config.lease_duration) for record, at in self._seen.values()
                        if record[0] and record[0] != self.config.identity]
        due = [t - now for t in expiries if t > now]
        return min([self.config.retry_period, *(d + 0.05 for d in due)])

    def _watch(self) -> None:
        """Watch the set's Leases; wake the loop when one is freed or deleted (a replica released it) or another
        replica announces a webhook on its membership Lease."""
        query = {"labelSelector": f"{SET_LABEL}={self.config.name}", "watch": "true", "timeoutSeconds": 60}
        while not self._stop.is_set():
            try:
                for event in self.cluster.transport.stream(self._url(), what="watch shard leases", query=query,
                                                            timeout=90):
                    if self._stop.is_set():
                        return
                    lease = event.get("object") or {}
                    spec = lease.get("spec") or {}
                    freed = not spec.get("holderIdentity")
                    name = (lease.get("metadata") or {}).get("name")
                    record = (spec.get("holderIdentity") or None, spec.get("renewTime"),
                              spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))
                    with self._lock:  # a renewal seen as it happens: its expiry is timed from here, not a round later
                        if name and (name not in self._seen or self._seen[name][0] != record):
                            self._seen[name] = (record, self.monotonic())
                    heard = (lease.get("metadata") or {}).get("annotations", {}).get(SYNC_ANNOTATION) or None
                    announced = name != self.config.member_lease and name in self._heard and heard != self._heard[name]
                    if event.get("type") == "DELETED" or (event.get("type") == "MODIFIED" and (freed or announced)):
                        self._wake.set()  # a replica left, or took a webhook: a round (which hears it) at once
            except DeployctlError as exc:
                log.debug("shards.watch_failed", error=str(exc))
                self._stop.wait(self.config.retry_period)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def release(self) -> None:
        """Stop, then free every slot and the membership (after the controller's work ended), so the other
        replicas take over without waiting the leases out."""
        self.stop()
        with self._round:
            with self._lock:
                held = sorted(self._held)
                self._held.clear()
                self._member_until = 0.0
            try:
                leases = {item["metadata"]["name"]: item for item in self._list()}
            except DeployctlError as exc:
                log.warning("shards.release_failed", error=str(exc))
                return
            # the membership first: the others' share grows at once, so each slot freed next is claimable
            member = leases.get(self.config.member_lease)
            if member is not None:
                self._free(member)
            for slot in held:
                lease = leases.get(self.config.slot_lease(slot))
                if lease is not None:
                    self._free(lease)
            log.info("shards.released", slots=held, identity=self.config.identity)
