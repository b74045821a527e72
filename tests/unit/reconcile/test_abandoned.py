"""At a run's start, which open attempts are closed: only those whose lock holder is gone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from deployctl.edges.kube.locks import LockHolder
from deployctl.errors import ClusterUnreachableError
from deployctl.model.audit import AuditRecord
from deployctl.reconcile.abandoned import close_abandoned, lock_identity_of
from deployctl.reconcile.runstate import AppLocking
from tests.fakes import FakeLock
from tests.fixtures.auditdata import make_attempt


def record(attempt_id: int, app: str, holder: str | None) -> AuditRecord:
    return AuditRecord(id=attempt_id, attempt=make_attempt(env="staging", app=app, lock_holder=holder),
                       result="started", error=None, finished_at=None, duration_seconds=None, digest=None)


@dataclass
class Audit:
    open: list[AuditRecord]
    asked: list[Sequence[str]] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)

    def open_attempts(self, envs: Sequence[str]) -> list[AuditRecord]:
        self.asked.append(list(envs))
        return self.open

    def close_abandoned(self, attempt_ids: Sequence[int]) -> list[int]:
        self.closed += attempt_ids
        return list(attempt_ids)


@dataclass
class Locks:
    """Each app's answer: the lock (its holder is gone), the holder that keeps it, or an error."""

    answers: dict[str, FakeLock | LockHolder | Exception]
    asked: list[tuple[str, str | None]] = field(default_factory=list)

    def try_take(self, context: str | None, namespace: str, app: str, *, identity: str,
                 lease: float) -> FakeLock | LockHolder:
        raise AssertionError("a run's start only asks whether a holder is gone")

    def take_if_gone(self, context: str | None, namespace: str, app: str, *, holder: str | None, identity: str,
                     lease: float) -> FakeLock | LockHolder:
        self.asked.append((app, holder))
        answer = self.answers[app]
        if isinstance(answer, Exception):
            raise answer
        return answer


def held_by(who: str | None) -> LockHolder:
    return LockHolder(who, "2026-12-03T10:00:00Z", "ns/deployctl-lock-x")


def test_only_attempts_whose_holder_is_gone_are_closed_and_a_lock_taken_for_it_is_released() -> None:
    freed = FakeLock("ns", "free")
    audit = Audit([record(1, "free", "killed"), record(2, "live", "live-run"), record(3, "moved", "killed-too"),
                   record(4, "raced", "killed-3"), record(5, "far", "killed-4"),
                   record(6, "sharded", "replica-a fence=s/3:7")])
    locks = Locks({"free": freed, "live": held_by("live-run"), "moved": held_by("another-run"),
                   "raced": held_by(None), "far": ClusterUnreachableError("unreachable"),
                   "sharded": held_by("replica-a")})
    closed = close_abandoned(audit, AppLocking(locks=locks, identity="me"), {"staging": None})  # type: ignore[arg-type]
    assert closed == audit.closed == [1, 3]  # free (taken, then released) and held by another run now
    assert freed.released
    assert audit.asked == [["staging"]]
    assert ("sharded", "replica-a") in locks.asked  # a sharded replica's record carries its fence after its identity


def test_no_open_attempt_asks_no_lock() -> None:
    locks = Locks({})
    assert close_abandoned(Audit([]), AppLocking(locks=locks, identity="me"), {"staging": None}) == []  # type: ignore[arg-type]
    assert locks.asked == []


def test_the_lock_identity_of_a_record_drops_a_sharded_replicas_fence() -> None:
    assert lock_identity_of("ci@host/1-abc") == "ci@host/1-abc"
    assert lock_identity_of("replica-a@pod/1-abc fence=deployctl/12:3") == "replica-a@pod/1-abc"
    assert lock_identity_of(None) is None
