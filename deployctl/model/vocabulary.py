"""The fixed words of deployctl, written once: results of a run, triggers of a run, exit codes.

The enums are ``StrEnum``/``IntEnum``, so a value compares equal to the plain string or number that is
stored in the audit history, printed in JSON and returned to the shell.
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
