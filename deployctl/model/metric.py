"""A product metric over time, to draw beside the deploys: values only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class MetricSeries:
    """One named series of (time, value) points, oldest first."""

    name: str
    times: tuple[datetime, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.times) != len(self.values):
            raise ValueError("a metric series needs as many times as values")


@dataclass(frozen=True)
class Overlay:
    """The series drawn above the deploy lanes, and where they came from (the axis title)."""

    title: str
    series: tuple[MetricSeries, ...]

    @property
    def points(self) -> int:
        return sum(len(s.values) for s in self.series)
