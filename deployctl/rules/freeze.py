"""Freeze windows: whether an instant falls inside one, and when that occurrence ends. Pure: no clock.

A window is one period (``start`` to ``end``) or, with ``weekly: true``, the same period every
7 days from ``start`` on (for example Friday 16:00 to Monday 06:00); times are tz-aware UTC.
A recurring freeze repeats in local wall-clock time of an IANA time zone (so it follows daylight
saving time): a cron expression starting a period of ``duration``, or a weekday/time range.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from deployctl.model.config import CONFIG_PATH, Config, EnvironmentConfig, FreezeWindow, RecurringFreeze

WEEK = timedelta(days=7)


@dataclass(frozen=True)
class ActiveFreeze:
    """The occurrence of a freeze window that covers an instant, for one environment."""

    env: str
    index: int  # position in environments.<env>.freeze
    window: FreezeWindow | RecurringFreeze
    start: datetime  # this occurrence (the window itself, or this week's repetition)
    end: datetime
    path: str = CONFIG_PATH
    line: int | None = None

    @property
    def where(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def as_dict(self) -> dict[str, object]:
        return {"env": self.env, "rule": f"environments.{self.env}.freeze[{self.index}]", "reason": self.window.reason,
                "started": _iso(self.start), "until": _iso(self.end)}

    def notice(self) -> str:
        """One line for status and diff: which environment is frozen until when, and why."""
        return f"{self.env} is frozen until {_iso(self.end)} ({self.window.reason}; {self.where})"

    def message(self) -> str:
        """Why nothing is deployed to the environment, and what to do."""
        return (
            f"{self.where}: environments.{self.env}.freeze[{self.index}] freezes {self.env} until "
            f"{_iso(self.end)} ({self.window.reason}); deploy after it ends, or run reconcile with "
            "--override-freeze --reason TEXT"
        )


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%MZ")


def occurrence(window: FreezeWindow | RecurringFreeze, at: datetime) -> tuple[datetime, datetime] | None:
    """The (start, end) of the occurrence of ``window`` that covers ``at`` (tz-aware), or None.
    Recurring freezes give their times in UTC like the others."""
    if at.tzinfo is None:
        raise ValueError("freeze windows are compared with tz-aware times only")
    if isinstance(window, RecurringFreeze):
        return _cron_occurrence(window, at) if window.cron else _range_occurrence(window, at)
    if at < window.start:
        return None
    if not window.weekly:
        return (window.start, window.end) if at < window.end else None
    start = window.start + WEEK * ((at - window.start) // WEEK)
    end = start + (window.end - window.start)
    return (start, end) if at < end else None


def _local(naive: datetime, zone: ZoneInfo) -> datetime:
    """A wall-clock time in ``zone`` as UTC (a time skipped by a DST change is taken as after it)."""
    return naive.replace(tzinfo=zone).astimezone(UTC)


def _cron_occurrence(window: RecurringFreeze, at: datetime) -> tuple[datetime, datetime] | None:
    assert window.cron is not None and window.duration is not None
    zone = ZoneInfo(window.timezone)
    # imported here, not at the top: 30 ms that a reconcile without cron freezes need not pay
    from croniter import croniter

    # the latest start at or before ``at`` (croniter's get_prev is strictly before its start)
    fired = croniter(window.cron, at.astimezone(zone) + timedelta(seconds=1)).get_prev(datetime)
    start_wall = fired.astimezone(zone).replace(tzinfo=None)
    start, end = _local(start_wall, zone), _local(start_wall + window.duration, zone)
    return (start, end) if start <= at < end else None


def _range_occurrence(window: RecurringFreeze, at: datetime) -> tuple[datetime, datetime] | None:
    assert window.from_time is not None and window.until_time is not None
    zone = ZoneInfo(window.timezone)
    today = at.astimezone(zone).date()
    if window.from_day is None or window.until_day is None:  # every day, e.g. 18:00 until 06:00
        span_days = 0 if window.until_time > window.from_time else 1
        back = range(0, 2)
    else:
        span_days = (window.until_day - window.from_day) % 7
        if span_days == 0 and window.until_time <= window.from_time:
            span_days = 7
        back = range(0, 8)
    best: tuple[datetime, datetime] | None = None
    for days in back:
        day = today - timedelta(days=days)
        if window.from_day is not None and day.weekday() != window.from_day:
            continue
        start = _local(datetime.combine(day, window.from_time), zone)
        end = _local(datetime.combine(day + timedelta(days=span_days), window.until_time), zone)
        if start <= at < end and (best is None or end > best[1]):
            best = (start, end)
    return best


def active_freeze(
    env: EnvironmentConfig, at: datetime, *, config: Config | None = None
) -> ActiveFreeze | None:
    """The freeze covering ``at`` in ``env``; of several, the one that ends last."""
    found: ActiveFreeze | None = None
    line = config.lines.get(f"environments.{env.name}") if config is not None else None
    path = config.path if config is not None else CONFIG_PATH
    for index, window in enumerate(env.freeze):
        span = occurrence(window, at)
        if span is None:
            continue
        if found is None or span[1] > found.end:
            found = ActiveFreeze(env.name, index, window, span[0], span[1], path, line)
    return found


def frozen_environments(config: Config, at: datetime) -> dict[str, ActiveFreeze]:
    """Every environment frozen at ``at``, by name."""
    out: dict[str, ActiveFreeze] = {}
    for name in sorted(config.environments):
        freeze = active_freeze(config.environments[name], at, config=config)
        if freeze is not None:
            out[name] = freeze
    return out
