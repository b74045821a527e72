"""Freeze windows: one-off and weekly, with the occurrence that covers an instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.model.config import Config, EnvironmentConfig, FreezeWindow
from deployctl.rules.freeze import active_freeze, frozen_environments, occurrence

FRI = datetime(2024, 6, 7, 16, 0, tzinfo=UTC)  # a Friday
MON = datetime(2024, 6, 10, 6, 0, tzinfo=UTC)
WEEKEND = FreezeWindow(FRI, MON, "No deploys over the weekend", weekly=True)
HOLIDAYS = FreezeWindow(datetime(2024, 12, 20, 18, tzinfo=UTC), datetime(2025, 1, 6, 6, tzinfo=UTC), "Holidays")


def env(*windows: FreezeWindow) -> EnvironmentConfig:
    return EnvironmentConfig(name="production", namespace="shop", freeze=windows)


def test_one_off_window_covers_start_but_not_end() -> None:
    assert occurrence(HOLIDAYS, HOLIDAYS.start) == (HOLIDAYS.start, HOLIDAYS.end)
    assert occurrence(HOLIDAYS, HOLIDAYS.end - timedelta(seconds=1)) is not None
    assert occurrence(HOLIDAYS, HOLIDAYS.end) is None
    assert occurrence(HOLIDAYS, HOLIDAYS.start - timedelta(seconds=1)) is None


def test_weekly_window_repeats_every_week_from_its_start() -> None:
    later = FRI + timedelta(weeks=30, hours=3)  # a Friday evening 30 weeks on
    assert occurrence(WEEKEND, later) == (FRI + timedelta(weeks=30), MON + timedelta(weeks=30))
    assert occurrence(WEEKEND, FRI + timedelta(weeks=30, days=3)) is None  # Monday 16:00
    assert occurrence(WEEKEND, FRI - timedelta(weeks=1)) is None  # before the first one


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        occurrence(HOLIDAYS, datetime(2024, 12, 24))  # noqa: DTZ001


@given(st.integers(min_value=0, max_value=520), st.integers(min_value=0, max_value=7 * 24 * 60 - 1))
def test_weekly_window_agrees_with_the_config_model(week: int, minute: int) -> None:
    at = FRI + timedelta(weeks=week, minutes=minute)
    assert (occurrence(WEEKEND, at) is not None) == WEEKEND.active(at)


def test_active_freeze_names_window_reason_and_end_and_how_to_override() -> None:
    at = datetime(2024, 12, 24, 12, tzinfo=UTC)
    freeze = active_freeze(env(WEEKEND, HOLIDAYS), at)
    assert freeze is not None and freeze.index == 1
    assert freeze.message() == (
        "deployctl.yaml: environments.production.freeze[1] freezes production until 2025-01-06T06:00Z "
        "(Holidays); deploy after it ends, or run reconcile with --override-freeze --reason TEXT"
    )


def test_of_two_overlapping_windows_the_later_ending_one_is_reported() -> None:
    at = datetime(2024, 12, 21, 12, tzinfo=UTC)  # a Saturday inside the holidays
    freeze = active_freeze(env(WEEKEND, HOLIDAYS), at)
    assert freeze is not None and freeze.window is HOLIDAYS


def test_frozen_environments_lists_only_frozen_ones_with_config_line() -> None:
    config = Config(
        version=1,
        apps={},
        environments={"production": env(HOLIDAYS), "staging": EnvironmentConfig("staging", "shop-staging")},
        lines={"environments.production": 9},
    )
    frozen = frozen_environments(config, datetime(2024, 12, 25, tzinfo=UTC))
    assert list(frozen) == ["production"]
    assert frozen["production"].where == "deployctl.yaml:9"
    assert frozen_environments(config, datetime(2025, 2, 1, tzinfo=UTC)) == {}


# -- recurring freezes in a time zone (cron or weekday ranges), on a fixed clock ----------------------

from deployctl.model.config import RecurringFreeze, load_config  # noqa: E402

RECURRING = b"""\
version: 1
apps:
  web: {image: registry.example.com/shop/web}
environments:
  oslo:
    namespace: shop-oslo
    freeze:
      - {from: "Fri 16:00", until: "Mon 08:00", timezone: Europe/Oslo, reason: Weekend}
  ny:
    namespace: shop-ny
    freeze:
      - {cron: "0 17 * * FRI", duration: 63h, timezone: America/New_York, reason: Weekend}
      - {from: "22:00", until: "06:00", timezone: America/New_York, reason: Nights}
"""


def _recurring() -> Config:
    config, problems = load_config(RECURRING)
    assert config is not None and not problems, problems
    return config


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_weekday_range_follows_oslo_wall_clock_across_the_dst_change() -> None:
    oslo = _recurring().environments["oslo"]
    # Summer (CEST, UTC+2): Friday 16:00 local is 14:00 UTC.
    assert active_freeze(oslo, utc(2024, 10, 18, 13, 59)) is None
    summer = active_freeze(oslo, utc(2024, 10, 18, 14, 0))
    assert summer is not None and summer.window.reason == "Weekend"
    # DST ends in the night of Sunday 27 October 2024: the freeze that starts in summer time ends on
    # Monday 08:00 winter time (CET, UTC+1) = 07:00 UTC, one hour longer than usual.
    crossing = active_freeze(oslo, utc(2024, 10, 26, 12, 0))
    assert crossing is not None and (crossing.start, crossing.end) == (utc(2024, 10, 25, 14), utc(2024, 10, 28, 7))
    assert active_freeze(oslo, utc(2024, 10, 28, 6, 59)) is not None
    assert active_freeze(oslo, utc(2024, 10, 28, 7, 0)) is None
    # Winter: Friday 16:00 CET is 15:00 UTC.
    assert active_freeze(oslo, utc(2024, 11, 1, 14, 30)) is None
    assert active_freeze(oslo, utc(2024, 11, 1, 15, 0)) is not None
    assert active_freeze(oslo, utc(2024, 10, 23, 12, 0)) is None  # a Wednesday


def test_cron_freeze_in_new_york_starts_on_local_time_before_and_after_dst() -> None:
    ny = _recurring().environments["ny"]
    # 8 March 2024 (EST, UTC-5): Friday 17:00 local = 22:00 UTC; 63 h later is Monday 08:00 local,
    # which after the change on Sunday 10 March is EDT (UTC-4) = 12:00 UTC.
    assert set(frozen_environments(_recurring(), utc(2024, 3, 8, 21, 59))) == {"oslo"}  # Oslo: 22:59
    weekend = active_freeze(ny, utc(2024, 3, 9, 12, 0))
    assert weekend is not None and (weekend.start, weekend.end) == (utc(2024, 3, 8, 22), utc(2024, 3, 11, 12))
    # A week later (EDT): 17:00 local = 21:00 UTC.
    assert active_freeze(ny, utc(2024, 3, 15, 20, 59)) is None
    later = active_freeze(ny, utc(2024, 3, 15, 21, 0))
    assert later is not None and later.window.reason == "Weekend" and later.end == utc(2024, 3, 18, 12)


def test_daily_range_wraps_midnight_and_the_longest_active_freeze_wins() -> None:
    ny = _recurring().environments["ny"]
    night = active_freeze(ny, utc(2024, 6, 5, 3, 0))  # Wednesday 23:00 EDT
    assert night is not None and night.window.reason == "Nights" and night.end == utc(2024, 6, 5, 10)
    assert active_freeze(ny, utc(2024, 6, 5, 10, 0)) is None
    # Friday 23:00 EDT: both the night and the weekend cover it; the weekend ends last.
    both = active_freeze(ny, utc(2024, 6, 8, 3, 0))
    assert both is not None and both.window.reason == "Weekend"
    assert "until 2024-06-10T12:00Z (Weekend)" in both.message()


@pytest.mark.parametrize(("entry", "message"), [
    ('{cron: "0 16 * * FRI", timezone: Europe/Oslo, reason: x}', "is missing duration"),
    ('{cron: "0 16 * FRI", duration: 2d, timezone: Europe/Oslo, reason: x}', "is not a 5-field cron expression"),
    ('{cron: "0 16 * * FRI", duration: 2 days, timezone: Europe/Oslo, reason: x}',
     ".freeze[0].duration '2 days' is not a positive duration; write e.g. 90s, 10m, 1h30m, 2d"),
    ('{from: "Fri 16:00", until: "Mon 08:00", timezone: Europe/Olso, reason: x}', "is not an IANA time zone"),
    ('{from: "Fry 16:00", until: "Mon 08:00", timezone: UTC, reason: x}', "is not a weekday and time"),
    ('{from: "Fri 16:00", until: "08:00", timezone: UTC, reason: x}', "a weekday in both from and until"),
    ('{from: "Fri 16:00", until: "Mon 08:00", reason: x}', "is missing timezone"),
    ('{from: "Fri 16:00", until: "Mon 08:00", timezone: UTC, reason: x, weekly: true}', "belongs to a dated"),
])
def test_bad_recurring_freezes_are_named_with_their_line(entry: str, message: str) -> None:
    text = RECURRING.decode().replace(
        '- {from: "Fri 16:00", until: "Mon 08:00", timezone: Europe/Oslo, reason: Weekend}', f"- {entry}")
    config, problems = load_config(text.encode())
    [problem] = [p for p in problems if p.env == "oslo"]
    assert message in problem.message and problem.line == 8, problem
    assert config is not None and "oslo" in config.invalid_environments


def test_recurring_freeze_model_keeps_local_times() -> None:
    [window] = _recurring().environments["oslo"].freeze
    assert isinstance(window, RecurringFreeze) and window.from_day == 4 and window.until_day == 0
