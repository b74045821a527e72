"""The claim rule of sharded controllers: stable slots, bounded shares, few keys moved."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from deployctl.rules.shards import keys_moved, moves, settle, share, slot_of

KEYS = [(env, f"app-{i}") for env in ("prod", "staging", "dev", "qa") for i in range(2500)]


def test_a_key_has_the_same_slot_in_every_process() -> None:
    code = "from deployctl.rules.shards import slot_of; print(slot_of('prod', 'web', 32), slot_of('dev', 'api', 64))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert runs == {f"{slot_of('prod', 'web', 32)} {slot_of('dev', 'api', 64)}\n"}


def test_keys_spread_over_every_slot() -> None:
    counts = Counter(slot_of(env, app, 32) for env, app in KEYS)
    assert set(counts) == set(range(32))
    assert max(counts.values()) < 2 * len(KEYS) / 32


def test_the_busiest_member_holds_at_most_a_quarter_over_the_mean() -> None:
    for slots in (32, 64):
        for n in (1, 2, 3, 4, 5, 7):
            members = [f"replica-{i}" for i in range(n)]
            held = settle(slots, members)
            assert len(held) == slots  # every slot owned
            busiest = max(Counter(held.values()).values())
            assert busiest == share(slots, n) <= 1.25 * slots / n


def test_three_to_four_members_moves_about_a_quarter_of_the_keys() -> None:
    for slots in (32, 64):
        before = settle(slots, ["a", "b", "c"])
        after = settle(slots, ["a", "b", "c", "d"], before)
        assert Counter(after.values())["d"] == slots // 4
        assert keys_moved(KEYS, slots, before, after) <= 1.3 / 4


def test_a_dead_members_slots_go_to_the_others_and_nothing_else_moves() -> None:
    before = settle(32, ["a", "b", "c", "d"])
    after = settle(32, ["a", "b", "c"], before)
    assert len(after) == 32
    assert all(after[s] == h for s, h in before.items() if h != "d")


def test_a_member_claims_only_free_slots_and_hands_back_its_excess() -> None:
    holders: dict[int, str | None] = {s: "a" for s in range(8)}  # a holds all 8, b just joined
    a = moves("a", 8, ["a", "b"], holders)
    b = moves("b", 8, ["a", "b"], holders)
    assert len(a.release) == 4 and len(a.keep) == 4 and a.claim == ()
    assert b.claim == ()  # nothing is free yet: b waits for a's hand-back
    for s in a.release:
        holders[s] = None
    assert moves("b", 8, ["a", "b"], holders).claim == a.release


def test_survivors_claiming_at_once_mostly_pick_different_slots() -> None:
    full = settle(32, ["a", "b", "c"])
    holders: dict[int, str | None] = {s: h for s, h in full.items() if h != "c"}  # c died
    a, b = moves("a", 32, ["a", "b"], holders), moves("b", 32, ["a", "b"], holders)
    assert len(a.claim) + len(b.claim) >= 32 - len(holders)  # together they cover what c held
    assert len(set(a.claim) & set(b.claim)) <= 2  # few write conflicts: most land in the first round


def test_a_lock_taken_under_a_newer_token_of_the_same_slot_supersedes_an_older_one_only():
    from deployctl.rules.shards import supersedes

    assert supersedes("deployctl/7:4", "deployctl/7:3")
    assert not supersedes("deployctl/7:3", "deployctl/7:3")  # the same token: the same holder's term
    assert not supersedes("deployctl/7:3", "deployctl/7:4")  # older never takes over
    assert not supersedes("deployctl/8:9", "deployctl/7:3")  # another slot
    assert not supersedes("other/7:9", "deployctl/7:3")  # another shard set
    assert not supersedes("deployctl/7:9", None)  # a CI run's lock has no fence: it is waited out
    assert not supersedes(None, "deployctl/7:3")
