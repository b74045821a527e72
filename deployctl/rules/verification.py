"""Verification decisions, pure: when each check is measured, whether a measurement passed, the verdict of a
deploy with the reason a person reads, and the last verified SHA to roll forward to. The values read from
Prometheus come in as arguments; no I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from deployctl.model.verification import (
    ALERT,
    Check,
    CheckOutcome,
    Measurement,
    Verification,
    VerifyResult,
)


def schedule(checks: Sequence[Check]) -> list[tuple[float, int]]:
    """(seconds after the start, index of the check) of every measurement, in time order."""
    ticks = [(k * c.interval_seconds, i) for i, c in enumerate(checks) for k in range(c.count)]
    return sorted(ticks)


def decided(check: Check, measurements: Sequence[Measurement]) -> bool:
    """Whether a check's verdict is known before its last measurement: it failed more than it may."""
    return sum(1 for m in measurements if not m.passed) > check.failure_limit


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def measure_query(check: Check, values: Sequence[float], *, at: datetime) -> Measurement:
    """A measurement from the values of every series the query returned: each must meet the condition.
    The value kept is the first that does not (else the first), so the record shows what failed."""
    assert check.condition is not None
    if not values:
        return Measurement(at, None, False, "the query returned no data")
    failing = [v for v in values if not check.condition.holds(v)]
    value = failing[0] if failing else values[0]
    if failing:
        more = f" ({len(failing)} of {len(values)} series)" if len(values) > 1 else ""
        return Measurement(at, value, False, f"{_fmt(value)} does not meet {check.condition.text}{more}")
    return Measurement(at, value, True)


def measure_alert(
    check: Check, firing: Iterable[Mapping[str, str]], *, app: str, env: str, namespace: str, at: datetime
) -> Measurement:
    """Passes when no firing alert named in the check concerns this deploy: an alert's ``app``, ``env`` and
    ``namespace`` labels, where it has them, must all be this deploy's for it to count."""
    mine = {"app": app, "env": env, "namespace": namespace}
    hits = [a for a in firing if all(a.get(k, v) == v for k, v in mine.items())]
    if hits:
        return Measurement(at, float(len(hits)), False, f"alert {check.query} is firing ({len(hits)})")
    return Measurement(at, 0.0, True)


def failed_measurement(error: str, *, at: datetime, unreachable: bool) -> Measurement:
    """A measurement that could not be taken: it fails (verification fails closed)."""
    return Measurement(at, None, False, error, unreachable=unreachable)


def outcome(check: Check, query: str, measurements: Sequence[Measurement]) -> CheckOutcome:
    return CheckOutcome(name=check.name, kind=check.kind, query=query, wanted=check.wanted(),
                        failure_limit=check.failure_limit, measurements=tuple(measurements))


def verdict(checks: Sequence[CheckOutcome]) -> tuple[VerifyResult, str]:
    """The result and its one-line reason: every check passed, or the first failing check with its query,
    the value read and the threshold it missed."""
    failing = [c for c in checks if not c.passed]
    if not checks:
        return VerifyResult.FAILED, "no check was measured"
    if not failing:
        parts = []
        for c in checks:
            seen = next((m.value for m in reversed(c.measurements) if m.value is not None), None)
            value = "" if seen is None else f" ({_fmt(seen)})"
            parts.append(f"{c.name}{value}")
        return VerifyResult.VERIFIED, "every check passed: " + ", ".join(parts)
    reasons = []
    for c in failing:
        bad = [m for m in c.measurements if not m.passed]
        last = bad[-1]
        if any(m.unreachable for m in bad):
            reasons.append(f"{c.name}: Prometheus unreachable: {last.error}")
            continue
        if c.kind == ALERT:
            reasons.append(f"{c.name}: alert {c.query} firing")
            continue
        value = "no data" if last.value is None else _fmt(last.value)
        reasons.append(f"{c.name}: {c.query} = {value}, wanted {c.wanted} ({len(bad)} of {len(c.measurements)} "
                       f"measurements failed; {c.failure_limit} allowed)"
                       + (f": {last.error}" if last.value is None and last.error else ""))
    return VerifyResult.FAILED, "; ".join(reasons)


def unreachable(checks: Sequence[CheckOutcome]) -> bool:
    """Whether the verdict rests on Prometheus not answering (the reason then says so)."""
    return any(m.unreachable for c in checks for m in c.measurements)


def latest(verifications: Iterable[Verification]) -> dict[tuple[str, str, str], Verification]:
    """The newest verification of each (env, app, sha)."""
    out: dict[tuple[str, str, str], Verification] = {}
    for v in verifications:
        key = (v.env, v.app, v.sha)
        if key not in out or (v.finished_at, v.id or 0) > (out[key].finished_at, out[key].id or 0):
            out[key] = v
    return out


def last_verified(verifications: Iterable[Verification], *, env: str, app: str, besides: str) -> str | None:
    """The SHA most recently verified in env/app whose latest verification passed, other than ``besides``."""
    newest = latest(v for v in verifications if v.env == env and v.app == app and v.sha != besides)
    passed = [v for v in newest.values() if v.ok]
    if not passed:
        return None
    return max(passed, key=lambda v: (v.finished_at, v.id or 0)).sha
