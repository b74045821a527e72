"""Freeze windows: whether an instant falls inside one, and when that occurrence ends. Pure: no clock.

A window is one period (``start`` to ``end``) or, with ``weekly: true``, the same period every
7 days from ``start`` on (for example Friday 16:00 to Monday 06:00). Times are tz-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from deployctl.model.config import CONFIG_PATH, Config, EnvironmentConfig, FreezeWindow

WEEK = timedelta(days=7)


@dataclass(frozen=True)
class ActiveFreeze:
    """The occurrence of a freeze window that covers an instant, for one environment."""

    env: str
    index: int  # position in environments.<env>.freeze
    window: FreezeWindow
    start: datetime  # this occurrence (the window itself, or this week's repetition)
    end: datetime
    path: str = CONFIG_PATH
    line: int | None = None

    @property
    def where(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"

    def message(self) -> str:
        """Why nothing is deployed to the environment, and what to do."""
        return (
            f"{self.where}: environments.{self.env}.freeze[{self.index}] freezes {self.env} until "
            f"{_iso(self.end)} ({self.window.reason}); deploy after it ends, or run reconcile with "
            "--override-freeze --reason TEXT"
        )


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%MZ")


def occurrence(window: FreezeWindow, at: datetime) -> tuple[datetime, datetime] | None:
    """The (start, end) of the occurrence of ``window`` that covers ``at`` (tz-aware), or None."""
    if at.tzinfo is None:
        raise ValueError("freeze windows are compared with tz-aware times only")
    if at < window.start:
        return None
    if not window.weekly:
        return (window.start, window.end) if at < window.end else None
    start = window.start + WEEK * ((at - window.start) // WEEK)
    end = start + (window.end - window.start)
    return (start, end) if at < end else None


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
