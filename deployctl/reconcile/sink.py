"""The audit sink a reconcile run writes through. Batch-first: a single write is a batch of one, and every
wrapper implements both calls, so a run writes one durable record per wave wherever it runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from deployctl.model.audit import AttemptEvent
from deployctl.rules.plan import Change

#: (change, image) of an attempt about to be applied.
AttemptItem = tuple[Change, str]
#: (attempt id, result, error) of an attempt that ended.
FinishItem = tuple[int | None, str, str | None]
#: (change, image, result, error) of a decision taken without an apply: refused, skipped, blocked.
DecisionItem = tuple[Change, str, str, str | None]


class AuditSink(Protocol):
    """What reconcile needs from the audit history: put a wave's attempts on record before acting, and
    their outcomes after, each in one write."""

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        """Record the attempts; returns one id (or None when nothing is recorded) per item, in order."""
        ...

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        """Record the outcomes of attempts started earlier; items with a None id are ignored."""
        ...

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        """Record decisions taken without an apply, each an attempt with its outcome; returns one id (or None
        when nothing is recorded) per item, in order."""
        ...

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        """Record what happened to attempts between their apply and their verdict (written before the outcomes)."""
        ...


class NullAudit:
    """Records nothing; events still go to structlog."""

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        return [None] * len(items)

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        return None

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        return [None] * len(items)

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        return None
