"""One audit record per decision: the controller does not repeat a refusal every interval.

A controller whose branch head is older than what CI applied refuses (or skips) the same change on every
interval. :class:`OncePerDecision` records such a ``skipped``/``refused`` decision once per (environment,
app, SHA, reason): a decision is written only when the latest record of its env/app is not the same
decision. The check reads the store, so it holds across restarts and replicas; a change of reason, of SHA
or any record in between (a deploy by CI) makes the next decision a new record, and so does a latest record
that does not verify in the audit chain.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from deployctl.model.audit import AttemptEvent, AuditError, AuditRecord, AuditStore
from deployctl.model.vocabulary import Result
from deployctl.reconcile.sink import AttemptItem, DecisionItem, FinishItem, RunAudit

log = structlog.get_logger(__name__)

ONCE = (str(Result.SKIPPED), str(Result.REFUSED))
"""The decisions recorded once: those the controller would otherwise repeat every interval."""


class OncePerDecision:
    """An :class:`~deployctl.reconcile.sink.AuditSink` that drops a ``skipped``/``refused`` decision when the
    latest record of its env/app is that same decision (same SHA, result and reason)."""

    def __init__(self, inner: RunAudit, store: AuditStore) -> None:
        self.inner = inner
        self.store = store

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None) -> list[int | None]:
        return self.inner.attempts_started(items, deploy_commit=deploy_commit)

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        self.inner.attempts_finished(items)

    def rollout_events(self, events: Sequence[AttemptEvent]) -> None:
        self.inner.rollout_events(events)

    def close_interrupted(self, *, env: str | None = None, apps: Sequence[str] | None = None) -> list[int]:
        return self.inner.close_interrupted(env=env, apps=apps)

    def open_attempts(self, envs: Sequence[str]) -> list[AuditRecord]:
        return self.inner.open_attempts(envs)

    def close_abandoned(self, attempt_ids: Sequence[int]) -> list[int]:
        return self.inner.close_abandoned(attempt_ids)

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None) -> list[int | None]:
        fresh = [i for i, item in enumerate(items) if not self._on_record(item)]
        ids: list[int | None] = [None] * len(items)
        if fresh:
            written = self.inner.decisions([items[i] for i in fresh], deploy_commit=deploy_commit)
            for i, attempt_id in zip(fresh, written, strict=True):
                ids[i] = attempt_id
        return ids

    def _on_record(self, item: DecisionItem) -> bool:
        change, _, result, error = item
        if result not in ONCE:
            return False
        try:
            latest = self.store.query(env=change.env, app=change.app, limit=1)
        except AuditError as exc:  # cannot tell: record it (a repeat is better than a lost decision)
            log.warning("audit.decision_check_failed", env=change.env, app=change.app, error=str(exc))
            return False
        if not latest:
            return False
        last = latest[0]
        same = (last.attempt.new_sha == (change.new_sha or "") and last.result == result
                and (last.error or None) == (error or None))
        if same and self.store.unverified([last.id]):  # a forged row must not stand for the controller's own
            log.warning("audit.decision_on_record_unverified", env=change.env, app=change.app, id=last.id)
            return False
        if same:
            log.debug("audit.decision_on_record", env=change.env, app=change.app, result=result, id=last.id)
        return same
