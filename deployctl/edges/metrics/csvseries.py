"""A metric exported from any warehouse as CSV: ``time,value[,series]`` rows, a header line allowed.

``time`` is ISO 8601 (UTC when it has no zone) or Unix seconds; ``value`` a number; ``series``
an optional name (rows without one form the series named after the file).
"""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from pathlib import Path

from deployctl.errors import InvalidInputError
from deployctl.model.metric import MetricSeries, Overlay

MAX_BYTES = 64 * 1024 * 1024
MAX_POINTS = 2_000_000


def _time(text: str) -> datetime:
    raw = text.strip()
    try:
        return datetime.fromtimestamp(float(raw), tz=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    value = datetime.fromisoformat(raw)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_csv(path: str | Path) -> Overlay:
    """The series of a ``time,value[,series]`` CSV file; errors name the file and line."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"{file}: cannot read the metric CSV: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise InvalidInputError(f"{file}: larger than {MAX_BYTES // (1024 * 1024)} MiB; aggregate it first")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{file}: not UTF-8 text") from exc
    points: dict[str, list[tuple[datetime, float]]] = {}
    count = 0
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) not in (2, 3):
            raise InvalidInputError(f"{file}:{line_no}: expected time,value[,series], got {len(row)} column(s)")
        try:
            when = _time(row[0])
            value = float(row[1])
        except ValueError:
            if line_no == 1 and not points:  # a header line
                continue
            raise InvalidInputError(
                f"{file}:{line_no}: {row[0][:40]!r},{row[1][:40]!r} is not an ISO time (or Unix seconds) "
                "and a number"
            ) from None
        if not math.isfinite(value):
            continue
        name = row[2].strip() if len(row) == 3 and row[2].strip() else file.stem
        points.setdefault(name, []).append((when, value))
        count += 1
        if count > MAX_POINTS:
            raise InvalidInputError(f"{file}: more than {MAX_POINTS} points; aggregate it first")
    if not points:
        raise InvalidInputError(f"{file}: no time,value rows")
    series = []
    for name, pairs in points.items():
        pairs.sort(key=lambda p: p[0])
        series.append(MetricSeries(name, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)))
    return Overlay(title=file.name, series=tuple(series))
