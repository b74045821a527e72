"""At a run's start: the attempts that runs which are gone left open in its environments, closed as interrupted.

An attempt is recorded under its app's lock and ends (its outcome written) before the lock is let go, so an open
attempt whose recorded holder no longer holds that lock was left by a run that died. A run killed after its apply
went through leaves its app in sync; no later run would take that lock again, so each run looks once (one query,
usually empty: no Lease request then) and closes what it can prove abandoned."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from deployctl.edges.kube.locks import LockHolder
from deployctl.errors import DeployctlError
from deployctl.model.audit import AuditRecord
from deployctl.reconcile.runstate import AppLocking
from deployctl.reconcile.sink import RunAudit

log = structlog.get_logger(__name__)


def lock_identity_of(lock_holder: str | None) -> str | None:
    """The identity in the app lock of the run that recorded an attempt: a sharded replica's records carry
    ``<identity> fence=<set>/<slot>:<token>`` (``controller/shards.py:FencedAudit``)."""
    return lock_holder.split(" fence=", 1)[0] if lock_holder else lock_holder


def close_abandoned(audit: RunAudit, locking: AppLocking, contexts: Mapping[str, str | None]) -> list[int]:
    """Close the open attempts of the environments of ``contexts`` (env -> its ``context:``) whose lock holder
    is gone: the app's Lease is free, expired or stale (then taken for the close and released), or held by
    another run. An attempt whose holder still holds the lock is running: it is left alone. The ids closed."""
    try:
        found = audit.open_attempts(sorted(contexts))
    except DeployctlError as exc:
        log.error("audit.open_attempts_failed", error=str(exc))
        return []
    closed: list[int] = []
    for record in found:
        closed += _close_if_gone(audit, locking, contexts, record)
    return closed


def _close_if_gone(audit: RunAudit, locking: AppLocking, contexts: Mapping[str, str | None],
                   record: AuditRecord) -> list[int]:
    attempt = record.attempt
    holder = lock_identity_of(attempt.lock_holder)
    try:
        answer = locking.locks.take_if_gone(contexts.get(attempt.env), attempt.namespace, attempt.app,
                                            holder=holder, identity=locking.identity, lease=locking.lease)
    except DeployctlError as exc:  # an unreachable cluster, or a slot this replica does not hold: not ours to say
        log.info("audit.abandoned_unchecked", id=record.id, env=attempt.env, app=attempt.app, error=str(exc))
        return []
    if isinstance(answer, LockHolder):
        if answer.identity is None or answer.identity == holder:
            return []  # its holder keeps the lock (running), or another run raced us to it: ask again next run
        return _close(audit, record)  # another run holds it now: the one that recorded the attempt lost it
    try:
        return _close(audit, record)
    finally:
        answer.release()


def _close(audit: RunAudit, record: AuditRecord) -> list[int]:
    try:
        ids = audit.close_abandoned([record.id])
    except DeployctlError as exc:
        log.error("audit.close_interrupted_failed", env=record.attempt.env, error=str(exc))
        return []
    if ids:
        log.warning("audit.abandoned_closed", id=record.id, env=record.attempt.env, app=record.attempt.app,
                    holder=record.attempt.lock_holder)
    return ids
