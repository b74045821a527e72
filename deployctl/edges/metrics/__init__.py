"""Product metrics to draw beside deploys: a Prometheus range query (:mod:`.prometheus`) or a CSV file (:mod:`.csvseries`)."""

from __future__ import annotations

from datetime import datetime

from deployctl.errors import InvalidInputError
from deployctl.model.metric import Overlay

KINDS = ("prometheus", "csv")


def overlay_kind(spec: str, *, query: str | None) -> str:
    """``prometheus`` or ``csv``: the kind of an ``--overlay`` spec, checked with its ``--query`` (no I/O)."""
    kind, sep, target = spec.partition("=")
    if not sep or kind not in KINDS or not target:
        raise InvalidInputError(
            f"--overlay {spec!r}: give prometheus=http://host:9090 (with --query) or csv=metric.csv"
        )
    if kind == "csv" and query is not None:
        raise InvalidInputError("--query goes with --overlay prometheus=URL, not with a CSV")
    if kind == "prometheus" and not (query or "").strip():
        raise InvalidInputError("--overlay prometheus=URL needs --query 'PROMQL'")
    return kind


def load_overlay(spec: str, *, query: str | None, start: datetime | None, end: datetime | None) -> Overlay:
    """The series named by ``--overlay`` (``prometheus=URL`` with ``query``, or ``csv=FILE``)."""
    kind = overlay_kind(spec, query=query)
    target = spec.partition("=")[2]
    if kind == "csv":
        from deployctl.edges.metrics.csvseries import read_csv

        return read_csv(target)
    if start is None or end is None:
        raise InvalidInputError("--overlay prometheus=URL needs a time range: give --since (or record deploys first)")
    from deployctl.edges.metrics.prometheus import query_range

    return query_range(target, query or "", start=start, end=end)
