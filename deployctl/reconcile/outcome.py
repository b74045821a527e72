"""What a reconcile run ends with: one :class:`Outcome` per env/app, the :class:`ReconcileResult`, and
:class:`Progress` events for live displays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from deployctl.model.problem import Problem
from deployctl.model.vocabulary import AppState, EnvStatus, ExitCode, Result
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
    result: Result
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
            "result": str(self.result),
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
    """How one environment ended (see :class:`EnvStatus`)."""

    env: str
    status: EnvStatus
    message: str = ""
    context: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"env": self.env, "status": str(self.status), "message": self.message, "context": self.context}


@dataclass(frozen=True)
class ReconcileResult:
    plan: Plan
    outcomes: tuple[Outcome, ...]
    requests: Mapping[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    environments: tuple[EnvironmentOutcome, ...] = ()
    problems: tuple[Problem, ...] = ()  # invalid input of the selection that no outcome row reports

    @property
    def exit_code(self) -> ExitCode:
        """The highest of every outcome's, every environment's and invalid input's exit code."""
        codes = [o.result.exit_code for o in self.outcomes] + [e.status.exit_code for e in self.environments]
        if self.problems:
            codes.append(ExitCode.INVALID)
        return max(codes, default=ExitCode.OK)

    def tally(self, env: str | None = None) -> dict[Result, int]:
        """How many outcomes ended with each result (of ``env`` only, when given)."""
        counts: dict[Result, int] = {}
        for o in self.outcomes:
            if env is None or o.env == env:
                counts[o.result] = counts.get(o.result, 0) + 1
        return counts

    def writes(self) -> int:
        return sum(n for verb, n in self.requests.items() if verb in ("PATCH", "PUT", "POST", "DELETE"))

    def as_dict(self) -> dict[str, object]:
        return {
            "ref": self.plan.ref,
            "deploy_commit": self.plan.deploy_commit,
            "exit_code": int(self.exit_code),
            "seconds": round(self.seconds, 3),
            "requests": dict(self.requests),
            "counts": {str(r): n for r, n in self.tally().items()},
            "outcomes": [o.as_dict() for o in self.outcomes],
            "environments": [e.as_dict() for e in self.environments],
            "problems": [p.as_dict() for p in self.problems],
        }


@dataclass(frozen=True)
class Progress:
    """A state change of one env/app during a run, for live displays."""

    env: str
    app: str
    state: AppState | Result  # applying, waiting, or the final result
    message: str = ""
