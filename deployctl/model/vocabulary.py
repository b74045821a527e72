"""The fixed words of deployctl, written once, with the questions asked of them: results of a run,
environment statuses, the states of an app during a run, triggers, dashboard cell states and exit codes.

The enums are ``StrEnum``/``IntEnum``, so a value compares equal to the plain string or number that is
stored in the audit history, printed in JSON and returned to the shell. Code elsewhere asks a predicate
(``result.ok``, ``result.blocks_dependents``) instead of comparing with a string literal.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Result(StrEnum):
    """How one env/app ended in a run. The first seven are the audit history's words."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    DRIFT_CORRECTED = "drift-corrected"
    INTERRUPTED = "interrupted"
    REFUSED = "refused"
    SUSPENDED = "suspended"  # `deployctl suspend`: left alone (also the audit word for the suspend itself)
    RESUMED = "resumed"  # the audit word for `deployctl resume`
    SKIPPED = "skipped"  # the live deploy commit is newer than the one reconciled: nothing applied
    # outcomes that need no audit record of their own
    APPLIED = "applied"  # --no-wait: applied, the rollout not waited for (recorded as succeeded)
    IN_SYNC = "in-sync"
    MISSING = "missing"
    INVALID = "invalid"

    @property
    def ok(self) -> bool:
        """The app runs what was asked, or was rightly left as it is (nothing for CI to fail on)."""
        return self in _OK

    @property
    def changed(self) -> bool:
        """This run wrote the app's workloads and they came out fine."""
        return self in _CHANGED

    @property
    def satisfies_dependents(self) -> bool:
        """A dependent may go ahead after this result of its dependency (an in-sync dependency: only
        when healthy, which the outcome says, not the result)."""
        return self in _CHANGED or self is Result.SKIPPED

    @property
    def blocks_dependents(self) -> bool:
        """A dependent of an app with this result is blocked."""
        return not self.satisfies_dependents and self is not Result.IN_SYNC

    @property
    def is_problem(self) -> bool:
        """Worth a warning in the log: the run did not do what was asked for this app."""
        return self in _PROBLEMS

    @property
    def timed(self) -> bool:
        """The outcome's duration means something (a rollout ran)."""
        return self in _CHANGED or self is Result.FAILED

    @property
    def recorded_as(self) -> Result:
        """The word the audit history keeps for this result (``--no-wait``'s applied is succeeded)."""
        return Result.SUCCEEDED if self is Result.APPLIED else self

    @property
    def exit_code(self) -> ExitCode:
        """What this result alone makes ``deployctl reconcile`` return."""
        if self in (Result.INVALID, Result.REFUSED):
            return ExitCode.INVALID
        if self in (Result.FAILED, Result.BLOCKED, Result.MISSING):
            return ExitCode.FAILED
        return ExitCode.OK


_CHANGED = frozenset({Result.SUCCEEDED, Result.DRIFT_CORRECTED, Result.APPLIED})
_OK = _CHANGED | {Result.IN_SYNC, Result.SKIPPED, Result.SUSPENDED}
_PROBLEMS = frozenset({Result.FAILED, Result.BLOCKED, Result.REFUSED, Result.INVALID, Result.MISSING})


class DiffStatus(StrEnum):
    """What a change to the deploy repo does to one env/app (``deployctl diff``)."""

    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    UNCHANGED = "unchanged"
    INVALID = "invalid"  # the head's deploy file or config is invalid: nothing will be applied for it


class ImageStatus(StrEnum):
    """What a registry said about one image reference."""

    FOUND = "found"
    MISSING = "missing"
    UNREACHABLE = "unreachable"
    UNAUTHORIZED = "unauthorized"
    ERROR = "error"

    @property
    def fails_a_check(self) -> bool:
        """An image check fails on it even when the registry may not be asked (``--strict`` aside)."""
        return self in (ImageStatus.MISSING, ImageStatus.ERROR)


class RunStatus(StrEnum):
    """How one controller run ended, as the run metric labels it."""

    OK = "ok"
    FAILED = "failed"  # it ran; an outcome or an environment makes its exit code non-zero
    ERROR = "error"  # it raised before it could finish
    STOPPED = "stopped"  # it stopped acting (leadership lost, shutdown)


class EnvStatus(StrEnum):
    """How one environment ended in a run (its apps have outcomes of their own)."""

    OK = "ok"  # reconciled: its apps' outcomes say the rest
    INVALID = "invalid"  # not in deployctl.yaml, or its entry there has errors: nothing applied
    FAILED = "failed"  # e.g. its lock was not obtained, or lost
    UNREACHABLE = "unreachable"  # its cluster could not be reached: nothing more was done there

    @property
    def exit_code(self) -> ExitCode:
        return _ENV_EXIT[self]


class AppState(StrEnum):
    """Where one app is during a run (the reconciler's bookkeeping and the live progress display)."""

    PENDING = "pending"
    APPLYING = "applying"
    WAITING = "waiting"
    DONE = "done"

    @property
    def in_flight(self) -> bool:
        return self in (AppState.APPLYING, AppState.WAITING)


#: A dependency is still in flight: the dependent waits (the reconciler's third answer besides go and blocked).
WAIT = "wait"


class CellState(StrEnum):
    """The state of one env/app cell on the dashboard, from the live rollout and the last run on record."""

    IN_SYNC = "in-sync"
    PROGRESSING = "progressing"
    PENDING = "pending"  # out of sync: the next reconcile will update it
    DRIFTED = "drifted"
    FAILED = "failed"
    MISSING = "missing"
    BLOCKED = "blocked"
    INVALID = "invalid"
    REFUSED = "refused"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        """How the page names the state."""
        return _CELL_LABELS.get(self, self.value)


_CELL_LABELS = {CellState.IN_SYNC: "in sync", CellState.PROGRESSING: "rolling out", CellState.PENDING: "out of sync"}


#: The audit words after which the app runs the attempt's SHA (its rollout finished healthy).
RAN: frozenset[str] = frozenset({Result.SUCCEEDED, Result.DRIFT_CORRECTED})

#: The results an audit outcome may hold.
AUDIT_RESULTS: tuple[Result, ...] = (
    Result.SUCCEEDED, Result.FAILED, Result.BLOCKED, Result.DRIFT_CORRECTED, Result.INTERRUPTED, Result.REFUSED,
    Result.SUSPENDED, Result.RESUMED, Result.SKIPPED,
)

#: An attempt on record whose outcome is not (yet) written.
STARTED = "started"


class Trigger(StrEnum):
    """What started a run."""

    CI = "ci"
    WATCH = "watch"
    WEBHOOK = "webhook"
    DRIFT = "drift"
    MANUAL = "manual"


class ExitCode(IntEnum):
    """What ``deployctl`` returns to the shell; when several apply, the highest wins."""

    OK = 0
    FAILED = 1  # a rollout failed, an app is blocked or missing, or an error
    INVALID = 2  # invalid input or a refused change (gate, approval, freeze, namespace, image)
    UNREACHABLE = 3  # the Kubernetes API of an environment cannot be reached (the others still ran)


class CheckExit(IntEnum):
    """What a check returns to CI: ``validate``, and ``plan``/``diff`` with ``--exit-code`` (like
    ``terraform plan -detailed-exitcode``)."""

    CLEAN = 0  # valid, and (with --exit-code) nothing to change
    PROBLEMS = 1  # the input has errors (or an error stopped the check)
    CHANGES = 2  # --exit-code: valid, and there is something to change


_ENV_EXIT = {EnvStatus.OK: ExitCode.OK, EnvStatus.INVALID: ExitCode.INVALID, EnvStatus.FAILED: ExitCode.FAILED,
             EnvStatus.UNREACHABLE: ExitCode.UNREACHABLE}
