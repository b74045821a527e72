"""The ``freeze:`` list of an environment: date ranges (optionally weekly) and recurring freezes
in an IANA time zone (a cron expression with a duration, or a weekday/time range)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from deployctl.model.config.fields import FREEZE_KEYS
from deployctl.model.config.strict_yaml import Reader
from deployctl.model.config.values import FreezeWindow, RecurringFreeze, show
from deployctl.model.duration import DurationError, parse_duration

_DAY_TIME = re.compile(r"(?:([A-Za-z]+)\s+)?([0-9]{1,2}):([0-9]{2})")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EXAMPLES = (
    "write either start/end (dates), cron + duration + timezone, or from/until + timezone, e.g. "
    "{from: 'Fri 16:00', until: 'Mon 08:00', timezone: Europe/Oslo, reason: Weekend}"
)


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 instant with a timezone (or a bare date, taken as 00:00 UTC), converted to UTC."""
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def parse_day_time(text: str) -> tuple[int | None, time] | None:
    """``Fri 16:00`` -> (4, 16:00); ``06:30`` -> (None, 06:30) (every day); None when not that form."""
    m = _DAY_TIME.fullmatch(text.strip())
    if m is None:
        return None
    day: int | None = None
    if m.group(1):
        name = m.group(1).lower()
        matches = [i for i, full in enumerate(_DAY_NAMES) if len(name) >= 3 and full.startswith(name)]
        if not matches:
            return None
        day = matches[0]
    hour, minute = int(m.group(2)), int(m.group(3))
    if hour > 23 or minute > 59:
        return None
    return day, time(hour, minute)


def read_freeze(reader: Reader, node: Any, kp: str, env: str) -> list[FreezeWindow | RecurringFreeze]:
    if not isinstance(node, yaml.SequenceNode):
        reader.error(node, f"{kp}.freeze must be a list of freeze windows; {_EXAMPLES}", env=env)
        return []
    windows: list[FreezeWindow | RecurringFreeze] = []
    for i, item in enumerate(node.value):
        wkp = f"{kp}.freeze[{i}]"
        fields = reader.mapping(item, wkp, FREEZE_KEYS, env=env)
        if fields is None:
            continue
        if "cron" in fields or "from" in fields or "until" in fields:
            recurring = _recurring(reader, item, fields, wkp, env)
            if recurring is not None:
                windows.append(recurring)
            continue
        window = _dated(reader, item, fields, wkp, env)
        if window is not None:
            windows.append(window)
    return windows


def _dated(reader: Reader, item: Any, fields: dict[str, tuple[Any, Any]], wkp: str, env: str) -> FreezeWindow | None:
    missing = [k for k in ("start", "end", "reason") if k not in fields]
    if missing:
        reader.error(item, f"{wkp} is missing {', '.join(missing)}; {_EXAMPLES}", env=env)
        return None
    for key in ("duration", "timezone"):
        if key in fields:
            reader.error(fields[key][0], f"{wkp}.{key} belongs to a recurring freeze (cron or from/until)", env=env)
            return None
    times: list[datetime] = []
    for key in ("start", "end"):
        value_node = fields[key][1]
        text = reader.string(value_node, f"{wkp}.{key}", required=True, env=env)
        when = None if text is None else parse_time(text)
        if text is not None and when is None:
            reader.error(
                value_node,
                f"{wkp}.{key} {show(text)} is not a time with a timezone; write e.g. 2024-12-20T18:00:00Z",
                env=env,
            )
        if when is not None:
            times.append(when)
    reason = reader.string(fields["reason"][1], f"{wkp}.reason", required=True, env=env)
    weekly = False
    if "weekly" in fields:
        weekly = bool(reader.boolean(fields["weekly"][1], f"{wkp}.weekly", env=env))
    if len(times) != 2 or reason is None:
        return None
    start, end = times
    if end <= start:
        reader.error(item, f"{wkp} ends before it starts; end must be after start", env=env)
        return None
    if weekly and end - start > timedelta(days=7):
        reader.error(item, f"{wkp} is weekly but longer than 7 days", env=env)
        return None
    return FreezeWindow(start=start, end=end, reason=reason, weekly=weekly)


def _recurring(
    reader: Reader, item: Any, fields: dict[str, tuple[Any, Any]], wkp: str, env: str
) -> RecurringFreeze | None:
    for key in ("start", "end", "weekly"):
        if key in fields:
            reader.error(fields[key][0], f"{wkp}.{key} belongs to a dated freeze; a recurring one uses "
                         "cron + duration or from/until", env=env)
            return None
    required = ["reason", "timezone"] + (["cron", "duration"] if "cron" in fields else ["from", "until"])
    missing = [k for k in required if k not in fields]
    if missing:
        reader.error(item, f"{wkp} is missing {', '.join(missing)}; {_EXAMPLES}", env=env)
        return None
    if "cron" in fields and ("from" in fields or "until" in fields):
        reader.error(item, f"{wkp} has both cron and from/until; keep one", env=env)
        return None
    reason = reader.string(fields["reason"][1], f"{wkp}.reason", required=True, env=env)
    zone = reader.string(fields["timezone"][1], f"{wkp}.timezone", required=True, env=env)
    if reason is None or zone is None:
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        reader.error(fields["timezone"][1], f"{wkp}.timezone {show(zone)} is not an IANA time zone; write e.g. "
                     "Europe/Oslo or UTC", env=env)
        return None
    if "cron" in fields:
        expr = reader.string(fields["cron"][1], f"{wkp}.cron", required=True, env=env)
        text = reader.string(fields["duration"][1], f"{wkp}.duration", required=True, env=env)
        if expr is None or text is None:
            return None
        from croniter import croniter  # only a config with a cron freeze loads it

        if len(expr.split()) != 5 or not croniter.is_valid(expr):
            reader.error(fields["cron"][1], f"{wkp}.cron {show(expr)} is not a 5-field cron expression; write "
                         "e.g. '0 16 * * FRI' (minute hour day-of-month month day-of-week)", env=env)
            return None
        try:
            duration = parse_duration(text, what=f"{wkp}.duration")
        except DurationError as exc:
            reader.error(fields["duration"][1], str(exc), env=env)
            return None
        return RecurringFreeze(reason=reason, timezone=zone, cron=expr, duration=duration)
    parsed = []
    for key in ("from", "until"):
        text = reader.string(fields[key][1], f"{wkp}.{key}", required=True, env=env)
        value = None if text is None else parse_day_time(text)
        if text is not None and value is None:
            reader.error(fields[key][1], f"{wkp}.{key} {show(text)} is not a weekday and time; write e.g. "
                         "'Fri 16:00' (or '18:00' for every day)", env=env)
        parsed.append(value)
    start, end = parsed
    if start is None or end is None:
        return None
    if (start[0] is None) != (end[0] is None):
        reader.error(item, f"{wkp}: give a weekday in both from and until, or in neither (every day)", env=env)
        return None
    if start == end:
        reader.error(item, f"{wkp}: from and until are the same time; the freeze would be empty", env=env)
        return None
    return RecurringFreeze(reason=reason, timezone=zone, from_day=start[0], from_time=start[1], until_day=end[0],
                           until_time=end[1])
