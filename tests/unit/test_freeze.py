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
