"""The slot Leases of a sharded controller, over an in-memory Lease API with resourceVersion conflicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from deployctl.edges.kube.shards import ShardConfig, SlotLeases
from deployctl.edges.kube.transport import ClusterError


class LeaseApi:
    """GET (list), POST, PUT of Leases in one namespace, refusing a stale resourceVersion with 409."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False

    def request(self, method: str, path: str, *, what: str, query: Any = None, body: Any = None,
                timeout: float | None = None) -> dict[str, Any]:
        if self.down:
            raise ClusterError("connection refused", status=503)
        if method == "GET":
            return {"items": [copy.deepcopy(v) for v in self.leases.values()]}
        name = body["metadata"]["name"]
        if method == "POST" and name in self.leases or method == "PUT" and (
                self.leases[name]["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion")):
            raise ClusterError(f"conflict on {name}", status=409)
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[name] = stored
        return copy.deepcopy(stored)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Api:
    def __init__(self, api: LeaseApi) -> None:
        self.transport = api


def replica(api: LeaseApi, clock: Clock, name: str, *, busy: set[int] | None = None, slots: int = 8) -> SlotLeases:
    config = ShardConfig(namespace="ops", identity=name, slots=slots, lease_duration=15, renew_deadline=10,
                         retry_period=2)
    taken = busy if busy is not None else set()
    return SlotLeases(Api(api), config, busy=lambda s: s in taken, monotonic=clock)  # type: ignore[arg-type]


def rounds(clock: Clock, *replicas: SlotLeases, n: int = 3) -> None:
    for _ in range(n):
        for r in replicas:
            r.round()
        clock.t += 2


def test_two_replicas_share_the_slots_and_each_token_is_the_leases_transitions() -> None:
    api, clock = LeaseApi(), Clock()
    a, b = replica(api, clock, "a"), replica(api, clock, "b")
    rounds(clock, a, b)
    assert len(a.owned()) == len(b.owned()) == 4 and not a.owned() & b.owned()
    for slot in a.owned():
        assert a.token(slot) == api.leases[f"deployctl-slot-{slot:03d}"]["spec"]["leaseTransitions"] == 1


def test_a_replica_that_cannot_renew_stops_acting_before_its_lease_expires_for_the_others() -> None:
    api, clock = LeaseApi(), Clock()
    a, b = replica(api, clock, "a"), replica(api, clock, "b")
    rounds(clock, a, b)
    slot = min(a.owned())
    api.down = True
    with pytest.raises(ClusterError):
        a.round()  # nothing renewed (run() logs this and tries again next period)
    clock.t += 7  # 9s since the last renewal (rounds() moved the clock on by one period)
    assert a.token(slot) is not None
    clock.t += 1.1  # past the renew deadline since the last renewal
    assert a.token(slot) is None and a.owned() == frozenset() and not a.member()
    api.down = False
    b.round()
    assert slot not in b.owned()  # for b the lease (15s) has not run out yet: nobody acts on the slot
    clock.t += 5
    rounds(clock, b, n=2)
    assert slot in b.owned() and b.token(slot) == 2  # a new holder, a newer token


def test_a_slot_is_handed_back_only_once_the_work_in_flight_there_ends() -> None:
    api, clock = LeaseApi(), Clock()
    busy: set[int] = set()
    a = replica(api, clock, "a", busy=busy)
    rounds(clock, a)
    assert len(a.owned()) == 8
    busy.update(range(8))  # a run is going on every slot
    b = replica(api, clock, "b")
    rounds(clock, a, b)
    assert len(a.owned()) == 4  # no new work starts on the slots being handed back ...
    assert all(a.token(s) is not None for s in range(8))  # ... but they stay held while the run goes on
    assert b.owned() == frozenset()
    busy.clear()
    rounds(clock, a, b)
    assert len(a.owned()) == len(b.owned()) == 4


def test_release_frees_every_slot_at_once() -> None:
    api, clock = LeaseApi(), Clock()
    a, b = replica(api, clock, "a"), replica(api, clock, "b")
    rounds(clock, a, b)
    a.release()
    rounds(clock, b, n=3)
    assert len(b.owned()) == 8  # without waiting a lease duration out


def test_a_slot_count_out_of_range_is_refused() -> None:
    with pytest.raises(Exception, match="--shards 0"):
        ShardConfig(namespace="ops", identity="a", slots=0)


def test_a_push_announced_by_one_replica_is_heard_once_by_the_others() -> None:
    api, clock = LeaseApi(), Clock()
    heard: list[str | None] = []
    a = replica(api, clock, "a")
    b = replica(api, clock, "b")
    b.on_announced = heard.append
    rounds(clock, a, b)
    assert heard == []  # nothing announced yet (and what was there before b started is not news)
    a.announce("f" * 40)
    rounds(clock, a, b)
    assert heard == ["f" * 40]


def test_the_slots_of_a_dead_replica_are_taken_in_the_round_that_sees_them_expire_never_left_unowned() -> None:
    from deployctl.controller.shards import ShardCollector, ShardRuns
    from tests.fakes import desired_state

    api, clock = LeaseApi(), Clock()
    a, b = replica(api, clock, "a"), replica(api, clock, "b")
    rounds(clock, a, b)
    runs = ShardRuns(a)
    runs.begin(desired_state({f"app{i}": () for i in range(40)}))
    metrics = {m.name: m.samples[0].value for m in ShardCollector(a, runs).collect()}
    assert metrics["deployctl_shard_apps_unowned"] == 0 and metrics["deployctl_shard_apps_unowned_seconds"] == 0
    b_keys = sum(runs.keys_per_slot[s] for s in b.owned())
    assert b_keys > 0
    # b dies: a sees its slot leases unchanged, then expired (15 s), and takes them in the same round
    for _ in range(9):
        clock.t += 2
        a.round()
        metrics = {m.name: m.samples[0].value for m in ShardCollector(a, runs).collect()}
        assert metrics["deployctl_shard_apps_unowned"] == 0  # expired and taken in one round: never seen unowned
    assert len(a.owned()) == 8
    assert a.handovers == 0


def test_slots_seen_free_are_unowned_for_as_long_as_nobody_takes_them() -> None:
    from deployctl.controller.shards import ShardCollector, ShardRuns
    from tests.fakes import desired_state

    api, clock = LeaseApi(), Clock()
    a = replica(api, clock, "a")
    a.round()  # the first round claims nothing: every slot is unowned for now
    runs = ShardRuns(a)
    runs.begin(desired_state({f"app{i}": () for i in range(40)}))
    clock.t += 2
    metrics = {m.name: m.samples[0].value for m in ShardCollector(a, runs).collect()}
    assert metrics["deployctl_shard_apps_unowned"] == 40
    assert metrics["deployctl_shard_apps_unowned_seconds"] == 2
    a.round()
    metrics = {m.name: m.samples[0].value for m in ShardCollector(a, runs).collect()}
    assert metrics["deployctl_shard_apps_unowned"] == 0 and metrics["deployctl_shard_apps_unowned_seconds"] == 0


def test_a_dead_replicas_slots_are_taken_when_seen_expired_even_if_only_a_replica_started_since_has_room() -> None:
    """A replica started after the death (as a pod restarted in its place) sees the dead one's Leases expire a
    lease duration after *it* first saw them: later than the survivors, whose share is full. The first
    survivor to see a Lease expire frees it (the dead one's membership too), so the newcomer takes the
    slots in its next round: no slot waits for the newcomer's clock."""
    from deployctl.controller.shards import ShardCollector, ShardRuns
    from tests.fakes import desired_state

    api, clock = LeaseApi(), Clock()
    a, b, v = (replica(api, clock, n, slots=32) for n in ("a", "b", "v"))
    rounds(clock, a, b, v, n=4)
    assert sorted(len(r.owned()) for r in (a, b, v)) == [10, 11, 11]
    dead = len(v.owned())
    rounds(clock, a, b, n=3)  # v is killed; its replacement d starts 6 s later (lease 15 s)
    d = replica(api, clock, "d", slots=32)
    state = desired_state({f"app{i}": () for i in range(320)})
    collectors = []
    for r in (a, b, d):
        runs = ShardRuns(r)
        runs.begin(state)
        collectors.append(ShardCollector(r, runs))
    longest = 0.0
    for _ in range(20):
        for r in (a, b, d):
            r.round()
        for c in collectors:
            samples = {m.name: m.samples[0].value for m in c.collect()}
            longest = max(longest, samples["deployctl_shard_apps_unowned_seconds"])
        clock.t += 2
    held = [len(r.owned()) for r in (a, b, d)]
    assert sum(held) == 32 and max(held) <= 11  # balanced again once d sees what the survivors saw
    assert dead >= 10
    assert longest <= 2  # at most one retry period: a freed slot is taken in the newcomer's next round
