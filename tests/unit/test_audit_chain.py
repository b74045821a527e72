"""The audit chain's pure parts: the canonical hash, keys and MACs, and the verdict on one row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from deployctl.edges.audit.chain import (
    ATTEMPT_FIELDS,
    GENESIS,
    OUTCOME_FIELDS,
    AuditKeys,
    check_row,
    row_hash,
)
from deployctl.edges.audit.schema import ATTEMPT_COLUMNS
from deployctl.errors import InvalidInputError
from deployctl.model.chain import Break, ChainRow, Kind

KEY = AuditKeys.parse("k" * 32)
OUTCOME = (7, "succeeded", None, None, "2024-05-01T12:00:00.000000Z", "2024-05-01T12:00:01.000000Z")


def chained(kind: Kind, seq: int, prev: str, values: tuple[object, ...], keys: AuditKeys | None = KEY) -> ChainRow:
    digest = row_hash(kind, prev, values)
    return ChainRow(kind, seq, prev, digest, keys.sign(digest) if keys else None, values)


def verdict(row: ChainRow, expected_prev: str | None, *, find=lambda h: None, keyed_from=1, keys=KEY):  # type: ignore[no-untyped-def]
    broken = check_row(row, expected_prev=expected_prev, keys=keys, keyed_from=keyed_from, find=find)
    return None if broken is None else broken.how


def test_the_chain_hashes_every_column_of_an_attempt_and_an_outcome() -> None:
    assert ATTEMPT_FIELDS == ("id", *ATTEMPT_COLUMNS)
    assert OUTCOME_FIELDS == ("attempt_id", "result", "error", "digest", "finished_at", "recorded_at")


def test_the_hash_is_stable_and_reads_a_time_as_sqlite_stores_it() -> None:
    as_text = row_hash(Kind.OUTCOME, GENESIS, OUTCOME)
    assert as_text == "a007063c062885362c905cfeaca69c01e5d6395e0a4dd7ef31226fab99359e68"  # format v1: never changes
    in_berlin = timezone(timedelta(hours=2))
    as_datetimes = (*OUTCOME[:4], datetime(2024, 5, 1, 14, 0, tzinfo=in_berlin),
                    datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC))  # fmt: skip
    assert row_hash(Kind.OUTCOME, GENESIS, as_datetimes) == as_text
    assert row_hash(Kind.ATTEMPT, GENESIS, OUTCOME) != as_text
    assert row_hash(Kind.OUTCOME, "1" * 64, OUTCOME) != as_text


def test_keys_are_separated_by_commas_or_spaces_and_must_be_long() -> None:
    assert len(AuditKeys.parse(" " + "a" * 16 + ", " + "b" * 16 + "\n").keys) == 2
    with pytest.raises(InvalidInputError, match="DEPLOYCTL_AUDIT_KEY: key 2 is shorter than 16 characters"):
        AuditKeys.parse("a" * 16 + ",short")
    with pytest.raises(InvalidInputError, match="no key given"):
        AuditKeys.parse(" , ")
    assert AuditKeys.from_env({}) is None


def test_after_a_rotation_the_old_key_still_verifies_its_rows() -> None:
    old, new = "o" * 32, "n" * 32
    row = chained(Kind.OUTCOME, 1, GENESIS, OUTCOME, AuditKeys.parse(old))
    assert verdict(row, GENESIS, keys=AuditKeys.parse(f"{new},{old}")) is None
    assert verdict(row, GENESIS, keys=AuditKeys.parse(new)) is Break.UNKNOWN_KEY
    assert AuditKeys.parse(f"{new},{old}").sign("x") == AuditKeys.parse(new).sign("x")


def test_each_kind_of_break_is_told_apart() -> None:
    first = chained(Kind.ATTEMPT, 1, GENESIS, (7, "staging"))
    second = chained(Kind.OUTCOME, 2, first.hash or "", OUTCOME)
    assert verdict(second, first.hash) is None
    by_hash = {r.hash: r for r in (first, second)}
    assert verdict(ChainRow(Kind.OUTCOME, None, None, None, None, OUTCOME), None) is Break.INSERTED
    edited = ChainRow(Kind.OUTCOME, 2, second.prev, second.hash, second.mac, (7, "failed", *OUTCOME[2:]))
    assert verdict(edited, first.hash) is Break.EDITED
    assert verdict(second, "f" * 64) is Break.DELETED  # the row it follows is gone
    moved = ChainRow(Kind.OUTCOME, 1, second.prev, second.hash, second.mac, OUTCOME)  # stored before `first`
    later = ChainRow(Kind.ATTEMPT, 2, first.prev, first.hash, first.mac, first.values)
    assert verdict(moved, GENESIS, find=lambda h: {later.hash: later}.get(h)) is Break.REORDERED
    fork = chained(Kind.OUTCOME, 3, first.hash or "", OUTCOME)
    assert verdict(fork, second.hash, find=by_hash.get) is Break.FORKED
    forged_mac = ChainRow(Kind.OUTCOME, 2, second.prev, second.hash, first.mac, OUTCOME)
    assert verdict(forged_mac, first.hash) is Break.MAC_MISMATCH
    unkeyed = chained(Kind.OUTCOME, 2, first.hash or "", OUTCOME, keys=None)
    assert verdict(unkeyed, first.hash) is Break.UNKEYED
    assert verdict(unkeyed, first.hash, keys=None) is Break.UNKEYED  # no key needed to see that
    assert verdict(unkeyed, first.hash, keyed_from=None) is None  # a store that was never keyed
    assert verdict(second, first.hash, keys=None) is None  # a MAC is not checked without the key

