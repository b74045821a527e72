"""Sharing the (environment, app) keys across controller replicas: pure decisions, no I/O, no clock.

A key belongs to one of a fixed number of slots by a stable hash (SHA-256, never Python's salted
``hash()``), so every replica computes the same slot for it. A replica holds at most its share of the
slots, ``ceil(slots / live members)``: it keeps what it holds up to that share, hands back the rest and
claims free slots up to it (:func:`moves`), each member preferring the slots it ranks highest (a
rendezvous hash of slot and member). A slot held stays held, so a member joining takes only what the
others hold over the new share. The Lease edge does the claiming and the
handing back (after the work in flight on a slot ends).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_SLOTS = 32
MAX_SLOTS = 256


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "big")


def slot_of(env: str, app: str, slots: int) -> int:
    """The slot of an (environment, app) key among ``slots``, the same on every replica and every run."""
    return _digest("key", env, app) % slots


def share(slots: int, members: int) -> int:
    """The most slots one member may hold: ``ceil(slots / members)`` (all of them when nobody is live)."""
    return slots if members <= 0 else -(-slots // members)


def _rank(slot: int, member: str) -> int:
    return _digest("slot", str(slot), member)


@dataclass(frozen=True)
class Moves:
    """What one replica should do this round: the free slots to claim and the held ones to hand back."""

    claim: tuple[int, ...]
    release: tuple[int, ...]
    keep: tuple[int, ...]


def moves(me: str, slots: int, members: Iterable[str], holders: Mapping[int, str | None]) -> Moves:
    """The claim rule. ``members`` are the live members (``me`` among them); ``holders`` maps a slot to its
    live holder (None, or absent, when the slot's Lease is free or expired).

    A replica keeps the slots it holds up to :func:`share` (the ones it ranks highest), hands back the
    rest, and claims free slots (its highest ranked first) up to its share. Held slots stay where they are,
    so a member joining takes only the slots the others hold over the new share: few keys move."""
    live = set(members) | {me}
    cap = share(slots, len(live))
    held = sorted((s for s, h in holders.items() if h == me), key=lambda s: _rank(s, me), reverse=True)
    keep, release = held[:cap], held[cap:]
    # first the free slots this member ranks above every other live member, so that members claiming at
    # the same time mostly pick different slots (fewer write conflicts, one round fewer)
    def preference(s: int) -> tuple[bool, int]:
        mine = _rank(s, me)
        return all(mine >= _rank(s, m) for m in live), mine

    free = sorted((s for s in range(slots) if not holders.get(s)), key=preference, reverse=True)
    claim = free[:max(0, cap - len(keep))]
    return Moves(claim=tuple(sorted(claim)), release=tuple(sorted(release)), keep=tuple(sorted(keep)))


def settle(slots: int, members: Iterable[str], holders: Mapping[int, str | None] | None = None,
           *, rounds: int = 20) -> dict[int, str]:
    """slot -> member once every member applied :func:`moves` until nothing changes, starting from
    ``holders`` (a model of the replicas' rounds, for tests and the benchmark's keys-moved figure)."""
    names = sorted(set(members))
    state: dict[int, str | None] = {s: h for s, h in (holders or {}).items() if h in names}
    for _ in range(rounds):
        changed = False
        for me in names:
            mv = moves(me, slots, names, state)
            for s in mv.release:
                state[s] = None
            for s in mv.claim:
                state[s] = me
            changed = changed or bool(mv.release or mv.claim)
        if not changed:
            break
    return {s: h for s, h in state.items() if h}


def fence_value(set_name: str, slot: int, token: int) -> str:
    """The fencing token of a slot as written on a workload, a lock Lease and an attempt: ``<set>/<slot>:<token>``."""
    return f"{set_name}/{slot}:{token}"


def parse_fence(value: str | None, set_name: str | None = None) -> tuple[str, int, int] | None:
    """(set, slot, token) of a fence (of ``set_name`` when given); None when absent, of another set or malformed."""
    if not value:
        return None
    prefix, _, rest = value.partition("/")
    slot, _, token = rest.partition(":")
    if not prefix or (set_name is not None and prefix != set_name) or not slot.isdigit() or not token.isdigit():
        return None
    return prefix, int(slot), int(token)


def supersedes(ours: str | None, theirs: str | None) -> bool:
    """Whether a lock taken under fence ``ours`` may take over one written under ``theirs``: the same slot of
    the same set, with a newer token (its holder lost the slot, so it stopped acting before we took it)."""
    a, b = parse_fence(ours), parse_fence(theirs)
    return a is not None and b is not None and a[:2] == b[:2] and a[2] > b[2]


def keys_moved(keys: Iterable[tuple[str, str]], slots: int, before: Mapping[int, str],
               after: Mapping[int, str]) -> float:
    """The fraction of ``keys`` whose slot has another holder in ``after`` than in ``before``."""
    keys = list(keys)
    if not keys:
        return 0.0
    moved = sum(1 for env, app in keys if before.get(slot_of(env, app, slots)) != after.get(slot_of(env, app, slots)))
    return moved / len(keys)
