"""What a reconcile run ends with: one :class:`Outcome` per env/app, the :class:`ReconcileResult`, and
:class:`Progress` events for live displays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from deployctl.model.vocabulary import ExitCode, Result
from deployctl.rules.plan import Action, Plan

# Outcome results (kept as names for the modules that import them; the words live in model.vocabulary).
SUCCEEDED = Result.SUCCEEDED
APPLIED = Result.APPLIED
DRIFT_CORRECTED = Result.DRIFT_CORRECTED
IN_SYNC = Result.IN_SYNC
FAILED = Result.FAILED
BLOCKED = Result.BLOCKED
MISSING = Result.MISSING
INVALID = Result.INVALID
REFUSED = Result.REFUSED
SUSPENDED = Result.SUSPENDED
SKIPPED = Result.SKIPPED


@dataclass(frozen=True)
class Outcome:
    """How one env/app ended in this run."""

    env: str
    app: str
    action: Action
    result: str
    message: str = ""
    old_sha: str | None = None
    new_sha: str | None = None
    image: str | None = None
    workloads: tuple[str, ...] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    audit_id: int | None = None
    healthy: bool | None = None  # for in-sync apps: is the running rollout healthy?

    @property
    def key(self) -> tuple[str, str]:
        return (self.env, self.app)

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "env": self.env,
            "app": self.app,
            "action": str(self.action),
            "result": self.result,
            "message": self.message,
            "old_sha": self.old_sha,
            "new_sha": self.new_sha,
            "image": self.image,
            "workloads": list(self.workloads),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round(self.seconds, 3) if self.seconds is not None else None,
        }


@dataclass(frozen=True)
class EnvironmentOutcome:
    """How one environment ended: ``ok`` (its apps have their own outcomes), ``unreachable`` (its cluster
    could not be reached: nothing more was done there) or ``failed`` (e.g. its lock was not obtained)."""

    env: str
    status: str
    message: str = ""
    context: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"env": self.env, "status": self.status, "message": self.message, "context": self.context}


@dataclass(frozen=True)
class ReconcileResult:
    plan: Plan
    outcomes: tuple[Outcome, ...]
    requests: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    environments: tuple[EnvironmentOutcome, ...] = ()

    @property
    def exit_code(self) -> int:
        results = {o.result for o in self.outcomes}
        statuses = {e.status for e in self.environments}
        if "unreachable" in statuses:
            return ExitCode.UNREACHABLE
        if results & {INVALID, REFUSED}:
            return ExitCode.INVALID
        if results & {FAILED, BLOCKED, MISSING} or "failed" in statuses:
            return ExitCode.FAILED
        return ExitCode.OK

    def writes(self) -> int:
        return sum(n for verb, n in self.requests.items() if verb in ("PATCH", "PUT", "POST", "DELETE"))

    def as_dict(self) -> dict[str, object]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.result] = counts.get(o.result, 0) + 1
        return {
            "ref": self.plan.ref,
            "deploy_commit": self.plan.deploy_commit,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "requests": dict(self.requests),
            "counts": counts,
            "outcomes": [o.as_dict() for o in self.outcomes],
            "environments": [e.as_dict() for e in self.environments],
        }


@dataclass(frozen=True)
class Progress:
    """A state change of one env/app during a run, for live displays."""

    env: str
    app: str
    state: str  # applying, waiting, or a final result
    message: str = ""
