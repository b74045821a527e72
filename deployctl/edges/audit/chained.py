"""The audit chain in the store: appending chained rows under one lock, verifying the chain, checking rows.

Writers serialise on the chain's head: SQLite's ``BEGIN IMMEDIATE`` (every write transaction takes the
database's write lock before it reads the head), PostgreSQL's transaction-scoped advisory lock, which
the writer role may take without any privilege. So two processes never chain two rows to one head.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import Any

from deployctl.edges.audit.chain import (
    ATTEMPT_FIELDS,
    CHAIN_COLUMNS,
    GENESIS,
    OUTCOME_FIELDS,
    VERIFICATION_FIELDS,
    AuditKeys,
    ChainWalk,
    check_row,
    row_hash,
)
from deployctl.edges.audit.outbox import OutboxQueries
from deployctl.edges.audit.schema import CHAINED_TABLES
from deployctl.errors import InvalidInputError
from deployctl.model.chain import ChainReport, ChainRow, Kind

_PAGE = 5_000
"""Rows read per query while verifying: memory stays bounded however long the chain is."""
_IDS_PER_QUERY = 500
_TABLE = {Kind.ATTEMPT: ("attempts", "id", ATTEMPT_FIELDS), Kind.OUTCOME: ("outcomes", "attempt_id", OUTCOME_FIELDS),
          Kind.VERIFICATION: ("verifications", "id", VERIFICATION_FIELDS)}  # fmt: skip
_OF_ATTEMPT = (Kind.ATTEMPT, Kind.OUTCOME)
"""The rows that say an attempt happened and how it ended."""
_INSERT_VERIFICATION = (  # built from the constant field lists
    f"INSERT INTO verifications ({', '.join(VERIFICATION_FIELDS + CHAIN_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in VERIFICATION_FIELDS + CHAIN_COLUMNS)})"
)
_SELECT = {  # built from the constant field lists; values only ever travel as parameters
    kind: f"SELECT {', '.join(CHAIN_COLUMNS + fields)} FROM {table}"  # noqa: S608
    for kind, (table, _, fields) in _TABLE.items()
}


class ChainAppender:
    """Hands out the chain columns of the rows one transaction appends, from the head it read under the lock."""

    def __init__(self, seq: int, prev: str, keys: AuditKeys | None) -> None:
        self.seq, self.prev, self.keys = seq, prev, keys

    def next(self, kind: Kind, values: Sequence[Any]) -> tuple[int, str, str, str | None]:
        """(chain_seq, chain_prev, chain_hash, chain_mac) of the next row."""
        digest = row_hash(kind, self.prev, values)
        self.seq += 1
        link = (self.seq, self.prev, digest, None if self.keys is None else self.keys.sign(digest))
        self.prev = digest
        return link


class ChainQueries(OutboxQueries):
    """The chain's share of the store: the head under a lock, ``verify_chain``, ``unverified`` and
    ``unverified_verifications``."""

    keys: AuditKeys | None = None

    # -- writing ---------------------------------------------------------------------------------
    def _lock_chain(self, cur: Any) -> None:
        """Serialise chain writers until the end of this transaction (a dialect hook)."""
        raise NotImplementedError  # pragma: no cover

    def _chain_appender(self, cur: Any) -> ChainAppender:
        """Take the chain lock and read its head; call first in a write transaction that appends chained rows."""
        self._lock_chain(cur)
        seq, prev = 0, GENESIS
        for table in CHAINED_TABLES:
            row = cur.execute(
                f"SELECT chain_seq, chain_hash FROM {table} WHERE chain_seq IS NOT NULL "  # noqa: S608
                "ORDER BY chain_seq DESC LIMIT 1"
            ).fetchone()
            if row is not None and int(row[0]) > seq:
                seq, prev = int(row[0]), row[1] or ""
        return ChainAppender(seq, prev, self.keys)

    def _append_verification(self, cur: Any, values: Sequence[Any]) -> int:
        """Insert one verification row (its values after the id) as the chain's next row; its id, chosen under
        the chain lock because the row's hash covers it."""
        chain = self._chain_appender(cur)
        verification_id = int(cur.execute("SELECT coalesce(max(id), 0) + 1 FROM verifications").fetchone()[0])
        row = (verification_id, *values)
        cur.execute(self._sql(_INSERT_VERIFICATION), (*row, *chain.next(Kind.VERIFICATION, row)))
        return verification_id

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _chain_row(kind: Kind, row: Sequence[Any]) -> ChainRow:
        seq, prev, digest, mac, *values = row
        return ChainRow(kind, None if seq is None else int(seq), prev, digest, mac, tuple(values))

    def _rows_where(self, kind: Kind, where: str, params: Sequence[Any]) -> list[ChainRow]:
        return [self._chain_row(kind, r) for r in self._fetchall(_SELECT[kind] + " WHERE " + where, params)]

    def _find_by_hash(self, digest: str) -> ChainRow | None:
        for kind in Kind:
            found = self._rows_where(kind, "chain_hash = ?", (digest,))
            if found:
                return found[0]
        return None

    def _keyed_from(self, before: int) -> int | None:
        """The first row before #``before`` that carries a MAC (every row after it must carry one too).

        Read along the ``chain_seq`` index, which stops at the first keyed row: no index of its own to
        keep up on every write.
        """
        firsts = [
            self._fetchall(
                f"SELECT chain_seq FROM {table} WHERE chain_seq < ? AND chain_mac IS NOT NULL "  # noqa: S608
                "ORDER BY chain_seq LIMIT 1",
                (before,),
            )
            for table in CHAINED_TABLES
        ]
        found = [int(rows[0][0]) for rows in firsts if rows]
        return min(found) if found else None

    def _chain_pages(self, kind: Kind, first: int, last: int) -> Iterator[ChainRow]:
        while first <= last:
            page = self._rows_where(
                kind, "chain_seq >= ? AND chain_seq <= ? ORDER BY chain_seq LIMIT ?", (first, last, _PAGE)
            )
            yield from page
            if len(page) < _PAGE:
                return
            first = int(page[-1].seq or 0) + 1

    # -- verifying -------------------------------------------------------------------------------
    def verify_chain(self, *, since: int | None = None) -> ChainReport:
        """Walk the chain in order, from the first row (or attempt ``since``) to the head when called."""
        report = ChainReport()
        report.migrated_through = self._fetchall("SELECT max(through_seq) FROM chain_start")[0][0]
        walk = ChainWalk(keys=self.keys, keyed_from=None, expected_prev=GENESIS, find=self._find_by_hash,
                         report=report, adopted=self._adopted())  # fmt: skip
        for kind in Kind:
            id_column = _TABLE[kind][1]
            unchained = self._rows_where(kind, f"chain_seq IS NULL ORDER BY {id_column} LIMIT 1", ())
            if unchained:
                walk.feed(unchained[0])
                return walk.close()
        first = 1
        if since is not None:
            start = self._rows_where(Kind.ATTEMPT, "id = ?", (since,))
            if not start:
                raise InvalidInputError(f"--since {since}: there is no attempt {since} in {self.url}")
            first, walk.expected_prev = int(start[0].seq or 0), None  # trusted: a known-good point
            walk.keyed_from = self._keyed_from(first)
        heads = [self._fetchall(f"SELECT max(chain_seq) FROM {table}")[0][0] for table in CHAINED_TABLES]  # noqa: S608
        last = max((int(h) for h in heads if h is not None), default=0)
        rows = heapq.merge(*(self._chain_pages(kind, first, last) for kind in Kind), key=lambda r: r.seq or 0)
        for row in rows:
            if not walk.feed(row):
                break
        return walk.close()

    def unverified(self, attempt_ids: Sequence[int]) -> dict[int, str]:
        """Why each of these attempts (its row, or its outcome's) does not verify; verified ones are absent.
        (A verification's own row is checked by :meth:`unverified_verifications`.)

        A few queries per 500 attempts, whatever their number: the rows, the hashes of the rows before them,
        and (when a row carries no MAC) where the chain's keyed part begins.
        """
        out: dict[int, str] = {}
        unique = list(dict.fromkeys(attempt_ids))
        for i in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[i : i + _IDS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            rows = [
                row for kind in _OF_ATTEMPT for row in self._rows_where(kind, f"{_TABLE[kind][1]} IN ({marks})", chunk)
            ]
            before = self._hashes_at([row.seq - 1 for row in rows if row.seq is not None])
            unmaced = [row.seq for row in rows if row.seq is not None and row.mac is None]
            keyed = self._keyed_from(max(unmaced) + 1) if unmaced else None
            for row in rows:  # attempts first: an attempt's own row names it before its outcome does
                if row.attempt_id in out:
                    continue
                broken = self._check_one(row, before, keyed)
                if broken is not None:
                    out[row.attempt_id] = broken
        return out

    def unverified_verifications(self, verification_ids: Sequence[int]) -> dict[int, str]:
        """Why each of these verification rows does not verify in the chain; verified ones are absent."""
        out: dict[int, str] = {}
        unique = list(dict.fromkeys(verification_ids))
        adopted = self._adopted()
        for i in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[i : i + _IDS_PER_QUERY]
            rows = self._rows_where(Kind.VERIFICATION, f"id IN ({', '.join('?' for _ in chunk)})", chunk)
            before = self._hashes_at([row.seq - 1 for row in rows if row.seq is not None])
            unmaced = [row.seq for row in rows if row.seq is not None and row.mac is None]
            keyed = self._keyed_from(max(unmaced) + 1) if unmaced else None
            for row in rows:
                broken = self._check_one(row, before, keyed, adopted)
                if broken is not None:
                    out[row.row_id] = broken
        return out

    def _check_one(self, row: ChainRow, before: dict[int, str], keyed: int | None,
                   adopted: range = range(0)) -> str | None:  # fmt: skip
        """Why one row does not verify against the row before it in the chain, or None."""
        expected = keyed_from = None
        if row.seq is not None:
            expected = before.get(row.seq - 1, "")
            keyed_from = keyed if keyed is not None and keyed < row.seq else None
        broken = check_row(row, expected_prev=expected, keys=self.keys, keyed_from=keyed_from,
                           find=self._find_by_hash, adopted=adopted)  # fmt: skip
        return None if broken is None else broken.message

    def _adopted(self) -> range:
        """The chain places of the verification rows migration 9 chained as found (no MAC; not a break)."""
        rows = self._fetchall("SELECT first_seq, through_seq FROM verification_chain_start")
        return range(int(rows[0][0]), int(rows[0][1]) + 1) if rows else range(0)

    def _hashes_at(self, seqs: Sequence[int]) -> dict[int, str]:
        """The hash of the row at each of ``seqs`` (GENESIS before the first); a place without a row is absent."""
        out = {0: GENESIS} if 0 in seqs else {}
        wanted = [seq for seq in dict.fromkeys(seqs) if seq > 0]
        for i in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[i : i + _IDS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            for table in CHAINED_TABLES:
                for seq, digest in self._fetchall(
                    f"SELECT chain_seq, chain_hash FROM {table} WHERE chain_seq IN ({marks})", chunk  # noqa: S608
                ):
                    out.setdefault(int(seq), digest or "")  # the first table's row, as verify reads it
        return out
