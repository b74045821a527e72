"""One duration grammar for every option and config field: Go/Kubernetes syntax plus days and weeks.

``90s``, ``10m``, ``1h30m``, ``500ms`` (as Kubernetes and Go write them, via durationpy), ``2d`` and
``1w`` on top, and a bare number meaning seconds (``1.5``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import durationpy

from deployctl.errors import InvalidInputError

EXAMPLE = "90s, 10m, 1h30m, 2d or 300 (seconds)"
_BARE = re.compile(r"\d+(?:\.\d+)?")
_DAYS = re.compile(r"(\d+(?:\.\d+)?)([dw])(?![a-z])")
# Go's units plus days and weeks; durationpy would also take "y", which Go and Kubernetes do not.
_GRAMMAR = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w))+")


class DurationError(ValueError):
    """The text is not a duration; the message shows an example."""


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> timedelta:
    """``text`` as a timedelta; ``what`` names the option or field in the error (e.g. ``--timeout``)."""
    cleaned = text.strip()
    try:
        if not _BARE.fullmatch(cleaned) and not _GRAMMAR.fullmatch(cleaned):
            raise ValueError(cleaned)
        if _BARE.fullmatch(cleaned):
            value = timedelta(seconds=float(cleaned))
        else:
            go = _DAYS.sub(lambda m: f"{float(m.group(1)) * (24 if m.group(2) == 'd' else 168):g}h", cleaned)
            value = durationpy.from_str(go) if go else timedelta(-1)
    except (durationpy.DurationError, ValueError, OverflowError):
        value = None
    if value is None or value < timedelta(0) or (value == timedelta(0) and not allow_zero):
        least = "a duration" if allow_zero else "a positive duration"
        raise DurationError(f"{what} {text[:40]!r} is not {least}; write e.g. {EXAMPLE}")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest Go-style spelling (``1h30m``, ``90s`` -> ``1m30s``)."""
    return str(durationpy.to_str(value))


def parse_when(text: str, *, now: datetime) -> datetime:
    """A time: ISO (UTC if no zone), or a duration ago in the one duration grammar (``90m``, ``1h30m``,
    ``2d``, ``1w``, a bare number of seconds)."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        try:
            return now.astimezone(UTC) - parse_duration(text, what="")
        except DurationError:
            raise InvalidInputError(
                f"{text!r} is not a time: use an ISO time like 2024-05-01T12:00:00Z "
                "or a duration like 2d, 90m, 1w or 1h30m"
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
