"""The audit chain's values: a chained row, how a row breaks the chain, and what ``audit verify`` found.

Values only, no I/O; the hashing and the checks are in :mod:`deployctl.edges.audit.chain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    ATTEMPT = "attempt"
    OUTCOME = "outcome"
    VERIFICATION = "verification"


class Break(StrEnum):
    """How a row breaks the chain."""

    INSERTED = "inserted"
    EDITED = "edited"
    DELETED = "deleted"
    REORDERED = "reordered"
    FORKED = "forked"
    MAC_MISMATCH = "mac-mismatch"
    UNKNOWN_KEY = "unknown-key"
    UNKEYED = "unkeyed"


@dataclass(frozen=True)
class ChainRow:
    """One attempt, outcome or verification row with its chain columns, as stored.

    An attempt's values begin with its id, an outcome's with its attempt's id, a verification's with its
    own id and then its attempt's id."""

    kind: Kind
    seq: int | None
    prev: str | None
    hash: str | None
    mac: str | None
    values: tuple[Any, ...]

    @property
    def attempt_id(self) -> int:
        return int(self.values[1 if self.kind is Kind.VERIFICATION else 0])

    @property
    def row_id(self) -> int:
        """The row's own id: the attempt's id for an attempt and its outcome, the verification's id."""
        return int(self.values[0])

    @property
    def name(self) -> str:
        """How a person finds the row: ``attempt 17`` or ``the outcome of attempt 17``."""
        if self.kind is Kind.ATTEMPT:
            return f"attempt {self.attempt_id}"
        if self.kind is Kind.VERIFICATION:
            return f"verification {self.row_id} of attempt {self.attempt_id} ({self.values[2]})"
        return f"the outcome of attempt {self.attempt_id} ({self.values[1]})"

    @property
    def where(self) -> str:
        return self.name if self.seq is None else f"chain row #{self.seq} ({self.name})"


@dataclass(frozen=True)
class ChainBreak:
    """The first row that does not verify, and how."""

    row: ChainRow
    how: Break
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.row.seq, "row": self.row.name, "kind": str(self.row.kind),
                "attempt_id": self.row.attempt_id, "how": str(self.how), "message": self.message}  # fmt: skip


MAX_UNKEYED_RANGES = 20


@dataclass
class ChainReport:
    """What ``audit verify`` found: the rows it checked, the unkeyed ones, and the first break."""

    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    keyed_rows: int = 0
    macs_checked: bool = False
    unkeyed_rows: int = 0
    unkeyed: list[tuple[str, str]] = field(default_factory=list)
    """Up to MAX_UNKEYED_RANGES runs of unkeyed rows, each as (first row, last row)."""
    migrated_through: int | None = None
    """Rows #1..N were chained by the migration as found then, not when written."""
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "rows": self.rows, "first_seq": self.first_seq, "last_seq": self.last_seq,
            "head": self.head, "keyed_rows": self.keyed_rows, "macs_checked": self.macs_checked,
            "unkeyed_rows": self.unkeyed_rows, "unkeyed": [list(r) for r in self.unkeyed],
            "migrated_through": self.migrated_through,
            "broken": None if self.broken is None else self.broken.as_dict(),
        }  # fmt: skip


