"""The audit sink a reconcile run writes through. Batch-first: a single write is a batch of one, and every
wrapper implements both calls, so a run writes one durable record per wave wherever it runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from deployctl.model.audit import AttemptEvent, AuditRecord
from deployctl.model.review import ReviewRecord
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


class RunAudit(AuditSink, Protocol):
    """The audit of a whole run (wrapped as its caller wants): the sink, and closing the attempts that a run
    which lost an app's lock left open."""

    def close_interrupted(self, *, env: str | None = None, apps: Sequence[str] | None = None) -> list[int]:
        """Close the attempts (of ``env``, of ``apps``) recorded under another lock holder as interrupted; their ids."""
        ...

    def open_attempts(self, envs: Sequence[str]) -> list[AuditRecord]:
        """The attempts of ``envs`` without an outcome (one query; usually none)."""
        ...

    def close_abandoned(self, attempt_ids: Sequence[int]) -> list[int]:
        """Close these attempts as interrupted (their lock holders are gone); the ids of those still open."""
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


class OverrideNotes:
    """An audit sink that writes a note (a freeze override) into the outcome of the attempts it concerns.

    The note goes into the record's ``error`` field, which is the record's free-text detail: a
    ``succeeded`` record with a note reads "succeeded, freeze overridden by ...: reason".
    """

    def __init__(self, sink: AuditSink, notes: Mapping[tuple[str, str], str]) -> None:
        self.sink = sink
        self.notes = dict(notes)
        self._by_id: dict[int, str] = {}

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        ids = self.sink.attempts_started(items, deploy_commit=deploy_commit)
        for (change, _), attempt_id in zip(items, ids, strict=True):
            note = self.notes.get(change.key)
            if note is not None and attempt_id is not None:
                self._by_id[attempt_id] = note
        return ids

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        noted: list[FinishItem] = []
        for attempt_id, result, error in items:
            note = self._by_id.pop(attempt_id, None) if attempt_id is not None else None
            if note is not None:
                error = note if not error else f"{error}; {note}"
            noted.append((attempt_id, result, error))
        self.sink.attempts_finished(noted)

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        noted: list[DecisionItem] = []
        for change, image, result, error in items:
            note = self.notes.get(change.key)
            if note is not None:
                error = note if not error else f"{error}; {note}"
            noted.append((change, image, result, error))
        return self.sink.decisions(noted, deploy_commit=deploy_commit)

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        self.sink.rollout_events(events)


class ReviewNotes:
    """An audit sink that attaches to each attempt of a target the pull request and approvals that let it
    through (``require_approval: forge``), so its record names them."""

    def __init__(self, sink: AuditSink, reviews: Mapping[tuple[str, str], ReviewRecord]) -> None:
        self.sink = sink
        self.reviews = dict(reviews)

    def _with(self, change: Change) -> Change:
        review = self.reviews.get(change.key)
        return change if review is None else replace(change, review=review)

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        return self.sink.attempts_started([(self._with(c), image) for c, image in items],
                                          deploy_commit=deploy_commit)

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        self.sink.attempts_finished(items)

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        return self.sink.decisions([(self._with(c), image, result, error) for c, image, result, error in items],
                                   deploy_commit=deploy_commit)

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        self.sink.rollout_events(events)
