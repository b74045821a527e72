"""The one duration grammar: Go/Kubernetes syntax, days and weeks, bare seconds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.model.duration import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), ("1w", 604800),
    ("1d12h", 129600), ("300", 300), ("1.5", 1.5), ("1.5h", 5400), (" 10m ", 600),
])
def test_go_syntax_days_weeks_and_bare_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["10 minutes", "2y", "-5s", "", "m", "10x", "1h-30m", "0"])
def test_anything_else_names_the_option_and_shows_an_example(text: str) -> None:
    with pytest.raises(DurationError, match=r"^--timeout .* is not a positive duration; write e\.g\. 90s, 10m"):
        parse_duration(text, what="--timeout")


def test_zero_only_where_allowed() -> None:
    assert parse_duration("0", allow_zero=True) == timedelta(0)
    assert parse_duration("0s", allow_zero=True) == timedelta(0)


@given(st.integers(min_value=1, max_value=10**7))
def test_a_formatted_duration_parses_back(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value
