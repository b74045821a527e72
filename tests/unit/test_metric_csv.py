"""Reading a metric CSV (time,value[,series]) for the timeline overlay: errors name file and line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployctl.edges.metrics.csvseries import read_csv
from deployctl.edges.metrics.prometheus import step_for
from deployctl.errors import InvalidInputError


def test_header_iso_and_unix_times_and_series(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text("time,value,series\n2024-11-24T01:00:00Z,3,eu\n1732410000,5,us\n2024-11-24T00:00:00,2,eu\n")
    overlay = read_csv(f)
    eu, us = overlay.series
    assert eu.name == "eu" and eu.values == (2.0, 3.0)  # sorted by time
    assert eu.times[0] == datetime(2024, 11, 24, tzinfo=UTC)
    assert us.times == (datetime.fromtimestamp(1732410000, tz=UTC),)
    assert overlay.points == 3


def test_rows_without_series_are_named_after_the_file(tmp_path: Path) -> None:
    f = tmp_path / "confirmed.csv"
    f.write_text("2024-11-24T00:00:00Z,1\n2024-11-24T01:00:00Z,2\n")
    assert [s.name for s in read_csv(f).series] == ["confirmed"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,value\n2024-11-24T00:00:00Z,abc\n", r"m.csv:2: .* is not an ISO time"),
        ("2024-11-24T00:00:00Z\n", r"m.csv:1: expected time,value\[,series\], got 1 column"),
        ("time,value\n", r"m.csv: no time,value rows"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "m.csv"
    f.write_text(text)
    with pytest.raises(InvalidInputError, match=message):
        read_csv(f)


def test_prometheus_step_gives_about_500_points() -> None:
    start = datetime(2024, 11, 21, tzinfo=UTC)
    assert step_for(start, datetime(2024, 11, 24, tzinfo=UTC)) == 519.0
    assert step_for(start, start.replace(minute=1)) == 1.0
