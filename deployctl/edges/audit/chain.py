"""The audit chain: every attempt, outcome and verification row commits to the row before it, and carries a MAC.

Pure: the canonical encoding of a row, its hash, the MAC under ``DEPLOYCTL_AUDIT_KEY``, and the
verdict on one row given the row before it (only the migration's :func:`chain_existing_rows` runs SQL,
through the cursor it is handed). The store (``edges/audit/chained.py``) reads
and writes the chain columns; docs/audit.md says what a verified chain proves and what it does not.

One chain runs through the three tables in the order rows were written (``chain_seq``, 1, 2, 3, …):
an attempt, later its outcome, other attempts in between. Each row holds

- ``chain_prev``: the hash of the row before it (``GENESIS`` for the first);
- ``chain_hash``: SHA-256 over ``FORMAT``, the row's kind, ``chain_prev`` and its values
  (``ATTEMPT_FIELDS`` / ``OUTCOME_FIELDS`` / ``VERIFICATION_FIELDS``, times as fixed-width UTC text), as compact JSON;
- ``chain_mac``: ``<key id>:<HMAC-SHA256(key, chain_hash)>``, or NULL when the writer held no key.

``chain_seq`` only locates a row; it is not hashed, so rows stored out of chain order read as
reordered rather than edited.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deployctl import settings
from deployctl.errors import InvalidInputError
from deployctl.model.audit import AuditError
from deployctl.model.chain import MAX_UNKEYED_RANGES, Break, ChainBreak, ChainReport, ChainRow, Kind

FORMAT = b"deployctl-audit-chain-v1\n"
GENESIS = "0" * 64
"""The ``chain_prev`` of the first row."""

ATTEMPT_FIELDS: tuple[str, ...] = (
    "id", "env", "app", "namespace", "workloads", "previous_sha", "new_sha", "image", "digest",
    "deploy_commit", "deploy_file", "file_commit", "file_author", "file_committer", "file_commit_time",
    "file_commit_summary", "reviewers", "app_commit_summary", "trigger", "actor_user", "actor_host",
    "actor_ci_job", "started_at", "lock_holder", "review",
)  # fmt: skip
"""The hashed columns of an attempt, in order. Fixed for format v1: a new column needs a new format."""
OUTCOME_FIELDS: tuple[str, ...] = ("attempt_id", "result", "error", "digest", "finished_at", "recorded_at")
VERIFICATION_FIELDS: tuple[str, ...] = (
    "id", "attempt_id", "result", "reason", "checks", "trigger", "started_at", "finished_at", "recorded_at",
)  # fmt: skip
"""The hashed columns of a verification (schema 9), in order."""
CHAIN_COLUMNS = ("chain_seq", "chain_prev", "chain_hash", "chain_mac")

MIN_KEY_CHARS = 16
_KEY_SEPARATORS = re.compile(r"[,\s]+")


def canonical(value: Any) -> Any:
    """A column value as hashed: times as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (as SQLite stores them)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return value


def _time(value: object) -> str:
    if isinstance(value, datetime):
        return str(canonical(value))
    raise TypeError(f"audit chain: cannot encode {type(value).__name__}")


# Strings, numbers and None are written by the C encoder as they are; only times reach ``_time``.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_time).encode


def row_hash(kind: str, prev: str, values: Sequence[Any]) -> str:
    """The hash of one row: its kind, the previous row's hash and its values, canonically encoded."""
    body = _ENCODE([kind, prev, list(values)])
    return hashlib.sha256(FORMAT + body.encode()).hexdigest()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"deployctl-audit-key-id\n" + key).hexdigest()[:8]


@dataclass(frozen=True)
class AuditKeys:
    """The chain's MAC keys: the first signs new rows, every one verifies (old keys after a rotation)."""

    keys: tuple[bytes, ...] = field(repr=False)
    _by_id: dict[str, bytes] = field(init=False, repr=False, compare=False)
    signing_id: str = field(init=False, compare=False)
    """The short id of the signing key, written before each MAC."""

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidInputError(f"{settings.AUDIT_KEY.name}: no key given")
        object.__setattr__(self, "_by_id", {_key_id(k): k for k in self.keys})
        object.__setattr__(self, "signing_id", _key_id(self.keys[0]))

    @classmethod
    def parse(cls, text: str) -> AuditKeys:
        """Keys separated by commas or spaces, the signing key first; each of 16 characters or more."""
        keys = [k for k in _KEY_SEPARATORS.split(text.strip()) if k]
        short = [i + 1 for i, k in enumerate(keys) if len(k) < MIN_KEY_CHARS]
        if short:
            raise InvalidInputError(
                f"{settings.AUDIT_KEY.name}: key {short[0]} is shorter than {MIN_KEY_CHARS} characters; "
                "use a random one, e.g. `openssl rand -hex 32`"
            )
        return cls(tuple(k.encode() for k in keys))

    @classmethod
    def from_env(cls, environ: Any = None) -> AuditKeys | None:
        """The keys in ``$DEPLOYCTL_AUDIT_KEY``, or None when it is unset (an unkeyed writer)."""
        text = settings.AUDIT_KEY.get(environ)
        return None if text is None else cls.parse(text)

    def sign(self, digest: str) -> str:
        return f"{self.signing_id}:{_mac(self.keys[0], digest)}"

    def check(self, mac: str, digest: str) -> Break | None:
        """None when ``mac`` is right for ``digest`` under one of the keys."""
        key_id, _, value = mac.partition(":")
        key = self._by_id.get(key_id)
        if key is None:
            return Break.UNKNOWN_KEY
        return None if hmac.compare_digest(value, _mac(key, digest)) else Break.MAC_MISMATCH


def _mac(key: bytes, digest: str) -> str:
    return hmac.digest(key, digest.encode(), "sha256").hex()


def check_row(
    row: ChainRow,
    *,
    expected_prev: str | None,
    keys: AuditKeys | None,
    keyed_from: int | None,
    find: Callable[[str], ChainRow | None],
    adopted: range = range(0),
) -> ChainBreak | None:
    """The verdict on one row: None when it verifies.

    ``expected_prev`` is the hash of the row before it in the chain (None: not checked, as for
    the first row of ``verify --since``); ``keyed_from`` the first row that carries a MAC (rows
    after it must carry one too); ``find(hash)`` looks up a row by its hash, to tell a deleted
    predecessor from a reordered one; ``adopted`` the places of the verification rows that migration 9
    chained as found (without a MAC, after keyed rows: nobody vouches for them, and they are not a break).
    """
    if row.seq is None or row.hash is None or row.prev is None:
        return ChainBreak(row, Break.INSERTED, f"{row.name} was inserted with SQL: it carries no chain "
                          "hash, and deployctl writes every row with one")  # fmt: skip
    if row_hash(row.kind, row.prev, row.values) != row.hash:
        return ChainBreak(row, Break.EDITED, f"{row.where} was edited after it was written (by a role "
                          "that may update the table, e.g. the owner) or inserted with a made-up hash: its "
                          "content does not match its hash")  # fmt: skip
    if expected_prev is not None and row.prev != expected_prev:
        return _link_break(row, find)
    if row.mac is not None:
        if keys is not None:
            how = keys.check(row.mac, row.hash)
            if how is Break.MAC_MISMATCH:
                return ChainBreak(row, how, f"{row.where} has a MAC that does not match under "
                                  f"{settings.AUDIT_KEY.name}: it was not written by a holder of the key")  # fmt: skip
            if how is Break.UNKNOWN_KEY:
                key_id = row.mac.partition(":")[0]
                return ChainBreak(row, how, f"{row.where} is signed by key {key_id!r}, which "
                                  f"{settings.AUDIT_KEY.name} does not hold: add the old key after the current "
                                  "one to check rows written before a rotation")  # fmt: skip
    elif keyed_from is not None and row.seq > keyed_from and not (row.kind is Kind.VERIFICATION and row.seq in adopted):
        return ChainBreak(row, Break.UNKEYED, f"{row.where} carries no MAC although the chain is keyed from "
                          f"#{keyed_from} on: it was written without {settings.AUDIT_KEY.name}, e.g. inserted "
                          "with the database role alone")  # fmt: skip
    return None


def _link_break(row: ChainRow, find: Callable[[str], ChainRow | None]) -> ChainBreak:
    assert row.prev is not None and row.seq is not None
    before = find(row.prev)
    if before is None or before.seq is None:
        if row.prev == GENESIS:
            return ChainBreak(row, Break.INSERTED, f"{row.where} claims to be the first row of the chain, "
                              "but rows come before it: it was inserted")  # fmt: skip
        return ChainBreak(row, Break.DELETED, f"{row.where} follows a row (hash {row.prev[:12]}…) that is no "
                          "longer in the store: the row(s) before it were deleted")  # fmt: skip
    if before.seq > row.seq:
        return ChainBreak(row, Break.REORDERED, f"{row.where} follows #{before.seq} ({before.name}) in the "
                          "chain but is stored before it: rows were reordered")  # fmt: skip
    return ChainBreak(row, Break.FORKED, f"{row.where} follows #{before.seq} ({before.name}), which another "
                      "row already follows: a second row was chained after it (written outside deployctl's "
                      "chain lock, or inserted)")  # fmt: skip


class ChainWalk:
    """Feeds rows in chain order and keeps only what the report needs: bounded memory."""

    def __init__(
        self, *, keys: AuditKeys | None, keyed_from: int | None, expected_prev: str | None,
        find: Callable[[str], ChainRow | None], report: ChainReport, adopted: range = range(0),
    ) -> None:  # fmt: skip
        self.keys, self.keyed_from, self.find, self.report = keys, keyed_from, find, report
        self.adopted = adopted
        self.expected_prev = expected_prev
        self._unkeyed_run: list[str] | None = None
        report.macs_checked = keys is not None

    def feed(self, row: ChainRow) -> bool:
        """Check one row; False once the chain is broken (the walk stops there)."""
        r = self.report
        broken = check_row(row, expected_prev=self.expected_prev, keys=self.keys, keyed_from=self.keyed_from,
                           find=self.find, adopted=self.adopted)  # fmt: skip
        if broken is not None:
            r.broken = broken
            self._end_unkeyed_run()
            return False
        r.rows += 1
        if r.first_seq is None:
            r.first_seq = row.seq
        r.last_seq, r.head = row.seq, row.hash
        self.expected_prev = row.hash
        if row.mac is not None:
            r.keyed_rows += 1
            if self.keyed_from is None:
                self.keyed_from = row.seq  # from here on every row must carry a MAC
            self._end_unkeyed_run()
        else:
            r.unkeyed_rows += 1
            if self._unkeyed_run is None:
                self._unkeyed_run = [row.where, row.where]
            else:
                self._unkeyed_run[1] = row.where
        return True

    def close(self) -> ChainReport:
        self._end_unkeyed_run()
        return self.report

    def _end_unkeyed_run(self) -> None:
        if self._unkeyed_run is not None and len(self.report.unkeyed) < MAX_UNKEYED_RANGES:
            self.report.unkeyed.append((self._unkeyed_run[0], self._unkeyed_run[1]))
        self._unkeyed_run = None


class ChainBrokenError(AuditError):
    """``audit verify`` found a row that breaks the chain."""


_BACKFILL_BATCH = 1000
# Built from the constant field lists above; values only ever travel as parameters.
_COLUMNS_EXISTING = ", ".join(["a." + c for c in ATTEMPT_FIELDS] + ["o." + c for c in OUTCOME_FIELDS])
_SELECT_EXISTING = f"SELECT {_COLUMNS_EXISTING} FROM attempts a LEFT JOIN outcomes o ON o.attempt_id = a.id WHERE a.id > ? ORDER BY a.id LIMIT ?"  # noqa: S608, E501


def chain_existing_rows(cur: Any, store: Any) -> None:
    """Migration 5: chain the rows that exist as they are found (attempt by attempt, each followed by
    its outcome; no MAC: nobody vouches for them) and mark where the chain begins in ``chain_start``.

    The one place this module touches a database: ``cur`` is the migration's cursor, ``store`` gives
    the dialect (``_sql``, ``_enc_time``). The UPDATE triggers are lifted around it by the migration.
    """
    select = store._sql(_SELECT_EXISTING)
    set_chain = "SET chain_seq = ?, chain_prev = ?, chain_hash = ?"
    update_attempt = store._sql(f"UPDATE attempts {set_chain} WHERE id = ?")
    update_outcome = store._sql(f"UPDATE outcomes {set_chain} WHERE attempt_id = ?")
    seq, prev, last_id = 0, GENESIS, 0
    while True:
        rows = cur.execute(select, (last_id, _BACKFILL_BATCH)).fetchall()
        if not rows:
            break
        attempts, outcomes = [], []
        for row in rows:
            attempt, outcome = tuple(row[: len(ATTEMPT_FIELDS)]), tuple(row[len(ATTEMPT_FIELDS) :])
            seq, digest = seq + 1, row_hash(Kind.ATTEMPT, prev, attempt)
            attempts.append((seq, prev, digest, attempt[0]))
            prev = digest
            if outcome[0] is not None:
                seq, digest = seq + 1, row_hash(Kind.OUTCOME, prev, outcome)
                outcomes.append((seq, prev, digest, outcome[0]))
                prev = digest
            last_id = int(attempt[0])
        cur.executemany(update_attempt, attempts)
        if outcomes:
            cur.executemany(update_outcome, outcomes)
    cur.execute(
        store._sql("INSERT INTO chain_start (through_seq, chained_at) VALUES (?, ?)"),
        (seq, store._enc_time(datetime.now(UTC))),
    )


def chain_existing_verifications(cur: Any, store: Any) -> None:
    """Migration 9: chain the verification rows that exist as they are found (by id, at the head of the
    chain, no MAC) and record their places in ``verification_chain_start``, once.

    Like :func:`chain_existing_rows`, the only SQL here runs through the migration's cursor.
    """
    head = store._chain_appender(cur)  # takes the chain lock and reads the head
    seq, prev = head.seq, head.prev
    first = seq + 1
    select = store._sql(f"SELECT {', '.join(VERIFICATION_FIELDS)} FROM verifications WHERE id > ? ORDER BY id LIMIT ?")  # noqa: S608
    update = store._sql("UPDATE verifications SET chain_seq = ?, chain_prev = ?, chain_hash = ? WHERE id = ?")
    last_id = 0
    while rows := cur.execute(select, (last_id, _BACKFILL_BATCH)).fetchall():
        links = []
        for row in rows:
            seq, digest = seq + 1, row_hash(Kind.VERIFICATION, prev, tuple(row))
            links.append((seq, prev, digest, row[0]))
            prev, last_id = digest, int(row[0])
        cur.executemany(update, links)
    cur.execute(
        store._sql("INSERT INTO verification_chain_start (first_seq, through_seq, chained_at) VALUES (?, ?, ?)"),
        (first, seq, store._enc_time(datetime.now(UTC))),
    )
