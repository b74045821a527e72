"""What happened to one attempt between its apply and its verdict, as a bounded list of timed events.

A :class:`RolloutLog` is fed by the reconciler (the apply, every rollout check, the verdict) and notes only
changes: a new ReplicaSet or revision, replica counts that moved, why the rollout stalled. It keeps at most
:data:`~deployctl.model.audit.MAX_EVENTS_PER_ATTEMPT` events: once full it drops further progress events
and says how many in the verdict, which (like the stall reason) always has its slot. Pure: time comes in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from deployctl.model.audit import MAX_EVENTS_PER_ATTEMPT, AttemptEvent, RolloutEventKind
from deployctl.model.workload import Workload

_RESERVED = 2  # the stall reason and the verdict always fit
_REPLICA_SET = re.compile(r'ReplicaSet "([^"]+)"')


def revision(workload: Workload) -> str | None:
    """The rollout's new ReplicaSet (a Deployment's Progressing condition names it) or update revision."""
    if workload.kind == "Deployment":
        for condition in workload.conditions:
            if condition.get("type") == "Progressing":
                found = _REPLICA_SET.search(str(condition.get("message") or ""))
                if found:
                    return f"ReplicaSet {found.group(1)}"
        return None
    return f"revision {workload.update_revision}" if workload.update_revision else None


def counts(workload: Workload) -> str:
    """The replica counts of a rollout in progress, as a person reads them."""
    n = workload.replicas
    return (f"{workload.ref}: {workload.updated_replicas}/{n} updated, {workload.ready_replicas}/{n} ready, "
            f"{workload.available_replicas}/{n} available")


@dataclass
class RolloutLog:
    """The events of one attempt, in order, bounded."""

    limit: int = MAX_EVENTS_PER_ATTEMPT
    events: list[tuple[datetime, RolloutEventKind, str]] = field(default_factory=list)
    dropped: int = 0
    _revisions: dict[str, str | None] = field(default_factory=dict)
    _counts: dict[str, str] = field(default_factory=dict)

    def note(self, at: datetime, kind: RolloutEventKind, detail: str) -> None:
        room = self.limit - (0 if kind in (RolloutEventKind.STALLED, RolloutEventKind.VERDICT) else _RESERVED)
        if len(self.events) >= room:
            self.dropped += 1
            return
        self.events.append((at, kind, detail))

    def applied(self, at: datetime, workloads: Sequence[Workload], image: str) -> None:
        for w in workloads:
            self._revisions[w.ref] = revision(w)  # the one before the apply: a new one is the rollout's
            self.note(at, RolloutEventKind.APPLIED, f"{w.ref}: generation {w.generation}, image {image}")

    def seen(self, at: datetime, workloads: Sequence[Workload]) -> None:
        """A rollout check: note a new revision and replica counts that changed since the last check."""
        for w in workloads:
            if w.kind == "CronJob" or w.observed_generation < w.generation:
                continue  # not yet looked at by its controller: nothing it says is about our apply
            new = revision(w)
            if new is not None and new != self._revisions.get(w.ref):
                self.note(at, RolloutEventKind.REVISION, f"{w.ref}: {new}")
            self._revisions[w.ref] = new
            now = counts(w)
            if self._counts.get(w.ref) != now:
                self._counts[w.ref] = now
                self.note(at, RolloutEventKind.PROGRESS, now)

    def stalled(self, at: datetime, reason: str) -> None:
        self.note(at, RolloutEventKind.STALLED, reason)

    def verdict(self, at: datetime, result: str, message: str) -> None:
        detail = f"{result}: {message}" if message else result
        if self.dropped:
            detail += f" ({self.dropped} further progress event(s) not recorded: at most {self.limit} per attempt)"
        self.note(at, RolloutEventKind.VERDICT, detail)

    def records(self, attempt_id: int) -> list[AttemptEvent]:
        """The events as audit records of ``attempt_id``, numbered from 1."""
        return [AttemptEvent(attempt_id=attempt_id, seq=i + 1, at=at, kind=str(kind), detail=detail)
                for i, (at, kind, detail) in enumerate(self.events)]
