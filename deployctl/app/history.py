"""The audit history as far as it can be believed: each record with whether its rows verify in the chain.

``deployctl history`` and the dashboard show a record whose rows do not verify (inserted or edited behind
deployctl's back, out of the chain, or under a MAC no held key checks) marked as such, with the reason,
never as plain history: the history must not say something that did not happen (docs/audit.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deployctl.model.audit import AttemptEvent, AuditRecord, AuditStore, record_to_event, record_with_events

CHAIN_FIELDS = ("chain_verified", "chain_unverified_reason")
"""The fields ``history -o json`` (and the dashboard's JSON) add to the export fields of each record."""


@dataclass(frozen=True)
class CheckedRecord:
    """An audit record and, when its rows do not verify in the chain, why."""

    record: AuditRecord
    unverified: str | None = None

    @property
    def verified(self) -> bool:
        return self.unverified is None

    def chain_fields(self) -> dict[str, Any]:
        return {"chain_verified": self.verified, "chain_unverified_reason": self.unverified}

    def as_dict(self) -> dict[str, Any]:
        """The record's export fields, then ``chain_verified`` and ``chain_unverified_reason``."""
        return {**record_to_event(self.record), **self.chain_fields()}

    def with_events(self, events: Sequence[AttemptEvent]) -> dict[str, Any]:
        """As :meth:`as_dict`, with the attempt's rollout events (``history --id N -o json``)."""
        return {**record_with_events(self.record, events), **self.chain_fields()}


def check_records(store: AuditStore, records: Sequence[AuditRecord]) -> list[CheckedRecord]:
    """``records`` (read from ``store``), each checked against the audit chain."""
    unverified = store.unverified([r.id for r in records]) if records else {}
    return [CheckedRecord(r, unverified.get(r.id)) for r in records]
