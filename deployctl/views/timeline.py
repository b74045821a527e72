"""Deploys over time as a chart: one lane per app, one marker per attempt coloured by its result, and
each verification of a deploy against its metrics marked on the same lane when its verdict came
(a green ring: verified; a red cross: verification-failed, with the check, its value and the threshold).

With an :class:`~deployctl.model.metric.Overlay` (a product metric from Prometheus or a CSV), the
metric is drawn on its own axis above the deploy lanes, on the same time axis, with a thin line
at every deploy through both, so that zooming to a day shows the deploys and the metric together.

:func:`build_figure` turns audit records into a plotly figure (no I/O); :func:`write_timeline`
writes it as a self-contained interactive HTML file (plotly.js inlined, works offline) or as a
PNG rendered from that HTML by a headless Chromium found on the PATH.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import plotly.graph_objects as go  # type: ignore[import-untyped]
import structlog

from deployctl import settings
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.audit import RESULTS, STARTED, AuditRecord
from deployctl.model.metric import Overlay
from deployctl.model.verification import Verification, VerifyResult
from deployctl.model.vocabulary import RAN, Result

log = structlog.get_logger(__name__)

RESULT_COLOURS = {
    Result.SUCCEEDED: "#2ca02c",
    Result.FAILED: "#d62728",
    Result.BLOCKED: "#ff7f0e",
    Result.DRIFT_CORRECTED: "#9467bd",
    Result.INTERRUPTED: "#8c564b",
    Result.REFUSED: "#e377c2",
    Result.SUSPENDED: "#7f7f7f",
    Result.RESUMED: "#17becf",
    Result.SKIPPED: "#bcbd22",
    STARTED: "#1f77b4",
}
VERIFICATION_MARKERS = {
    VerifyResult.VERIFIED: {"symbol": "circle-open", "color": "#2ca02c", "size": 21, "line": {"width": 2.5}},
    VerifyResult.FAILED: {"symbol": "x-thin-open", "color": "#d62728", "size": 17, "line": {"width": 3.5}},
}
"""How a verification's verdict is marked on its app's lane (shapes apart from the environments' symbols)."""
UNTRUSTED = "untrusted"
"""The legend name of attempts and verifications whose audit rows do not verify in the chain."""
UNTRUSTED_VERIFICATION_MARKER = {"symbol": "circle-x-open", "color": "#d62728", "size": 19, "line": {"width": 1.5}}
"""A verification whose row does not verify: an open red ring crossed out, neither the green ring nor the cross."""
OVERLAY_COLOURS = ("#17becf", "#7f7f7f", "#bcbd22", "#1f77b4", "#e377c2", "#8c564b")
OVERLAY_HEIGHT = 260
MAX_DEPLOY_LINES = 300
ENV_SYMBOLS = ("circle", "diamond", "square", "triangle-up", "star", "hexagon", "cross", "x")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class TimelineError(DeployctlError):
    """The timeline cannot be rendered or written."""


def _hover(record: AuditRecord, unverified: str | None = None) -> str:
    a = record.attempt
    lines = [] if unverified is None else [f"<b>UNTRUSTED</b>, not in the audit chain: {html.escape(unverified[:200])}"]
    lines += [
        f"<b>{html.escape(a.app)}</b> → {html.escape(a.env)}: <b>{html.escape(record.result)}</b>",
        f"SHA {a.new_sha[:12]}" + (f" (was {a.previous_sha[:12]})" if a.previous_sha else ""),
    ]
    if a.app_commit_summary:
        lines.append(html.escape(a.app_commit_summary.splitlines()[0][:90]))
    if a.file_author:
        lines.append("author: " + html.escape(a.file_author.split(" <")[0]))
    if a.file_commit_summary:
        lines.append("deploy: " + html.escape(a.file_commit_summary.splitlines()[0][:90]))
    when = a.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    took = "" if record.duration_seconds is None else f", took {record.duration_seconds:.1f}s"
    lines.append(f"{when}{took}")
    lines.append(
        f"{a.trigger} by {html.escape(a.actor.user)}"
        + (f" · release {a.deploy_commit[:12]}" if a.deploy_commit else "")
    )
    if record.error:
        lines.append("error: " + html.escape(record.error[:120]))
    return "<br>".join(lines)


def _verification_hover(v: Verification) -> str:
    lines = [] if v.chain_unverified is None else [
        f"<b>UNTRUSTED</b> verification, not in the audit chain: {html.escape(v.chain_unverified[:200])}"]
    lines += [
        f"<b>{html.escape(v.app)}</b> → {html.escape(v.env)}: <b>{html.escape(str(v.result))}</b>",
        f"SHA {v.sha[:12]} · attempt #{v.attempt_id}",
        html.escape(v.reason[:160]),
    ]
    for c in v.checks[:5]:
        last = c.measurements[-1].value if c.measurements else None
        value = "no value" if last is None else f"{last:.6g}"
        lines.append(f"{'pass' if c.passed else 'FAIL'} {html.escape(c.name)}: {value} (wanted "
                     f"{html.escape(c.wanted)})")
    lines.append(v.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") + f" · {html.escape(v.trigger)}")
    return "<br>".join(lines)


def _add_verifications(fig: go.Figure, verifications: Sequence[Verification], apps: Sequence[str]) -> None:
    """A marker per verification on its app's lane, at the time of its verdict."""
    lanes = set(apps)
    for result, marker in (*VERIFICATION_MARKERS.items(), (UNTRUSTED, UNTRUSTED_VERIFICATION_MARKER)):
        if result == UNTRUSTED:  # a row that does not verify in the chain: never drawn as the verdict it claims
            chosen = sorted((v for v in verifications if v.chain_unverified is not None and v.app in lanes),
                            key=lambda v: v.finished_at)  # fmt: skip
        else:
            chosen = sorted((v for v in verifications if v.result == result and v.chain_unverified is None
                             and v.app in lanes), key=lambda v: v.finished_at)  # fmt: skip
        if not chosen:
            continue
        fig.add_trace(
            go.Scatter(
                x=[v.finished_at.astimezone(UTC) for v in chosen],
                y=[v.app for v in chosen],
                mode="markers",
                name=f"{UNTRUSTED} verification" if result == UNTRUSTED else str(result),
                legendgroup="verification",
                legendgrouptitle_text="verification",
                marker={"symbol": marker["symbol"], "color": marker["color"], "size": marker["size"],
                        "line": {**marker["line"], "color": marker["color"]}},  # type: ignore[dict-item]
                text=[_verification_hover(v) for v in chosen],
                hovertemplate="%{text}<extra></extra>",
            )
        )


def build_figure(
    records: Sequence[AuditRecord],
    *,
    title: str = "Deploys",
    overlay: Overlay | None = None,
    time_range: tuple[datetime, datetime] | None = None,
    unverified: Mapping[int, str] | None = None,
    verifications: Sequence[Verification] = (),
) -> go.Figure:
    """The timeline figure: x is when an attempt started, y is its app, colour is its result.

    ``verifications`` (of these attempts) are marked on the same lanes; ``overlay`` adds its series on an
    axis of their own above the lanes; ``time_range`` fixes the x range.
    ``unverified`` (attempt id -> why its rows do not verify in the audit chain) are drawn apart, as open
    markers of their own legend entry ("untrusted"), never in the colour of the result they claim.
    """
    unverified = unverified or {}
    apps = sorted({r.attempt.app for r in records})
    envs = sorted({r.attempt.env for r in records})
    symbol = {env: ENV_SYMBOLS[i % len(ENV_SYMBOLS)] for i, env in enumerate(envs)}
    fig = go.Figure()
    for result in (*RESULTS, STARTED):
        chosen = sorted((r for r in records if r.result == result and r.id not in unverified),
                        key=lambda r: r.attempt.started_at)  # fmt: skip
        if not chosen:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r.attempt.started_at.astimezone(UTC) for r in chosen],
                y=[r.attempt.app for r in chosen],
                mode="markers",
                name=result,
                legendgroup="result",
                legendgrouptitle_text="result",
                marker={
                    "color": RESULT_COLOURS[result],
                    "size": 13,
                    "symbol": [symbol[r.attempt.env] for r in chosen],
                    "line": {"width": 1, "color": "#333"},
                },
                text=[_hover(r) for r in chosen],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    doubtful = sorted((r for r in records if r.id in unverified), key=lambda r: r.attempt.started_at)
    if doubtful:
        fig.add_trace(
            go.Scatter(
                x=[r.attempt.started_at.astimezone(UTC) for r in doubtful],
                y=[r.attempt.app for r in doubtful],
                mode="markers",
                name=UNTRUSTED,
                legendgroup="result",
                legendgrouptitle_text="result",
                marker={"color": "#d62728", "size": 13, "symbol": [symbol[r.attempt.env] + "-open" for r in doubtful],
                        "line": {"width": 2}},
                text=[_hover(r, unverified[r.id]) for r in doubtful],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    _add_verifications(fig, verifications, apps)
    if len(envs) > 1:
        for env in envs:  # a legend for the marker shapes only
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    name=env,
                    legendgroup="env",
                    legendgrouptitle_text="environment",
                    marker={"color": "#999", "size": 11, "symbol": symbol[env]},
                    hoverinfo="skip",
                )
            )
    fig.update_layout(
        title={"text": f"{html.escape(title)} · {len(records)} attempt(s)", "x": 0.01},
        template="plotly_white",
        # tall enough for the lanes and for the legend (results, verifications, environments, their titles)
        height=max(320, 140 + 60 * len(apps), 140 + 26 * (len(fig.data) + 4)),
        hovermode="closest",
        margin={"l": 110, "r": 170, "t": 70, "b": 40},
        legend={"orientation": "v", "x": 1.01, "y": 1},
        xaxis={
            "title": "time (UTC)",
            "type": "date",
            "showspikes": True,
            "spikemode": "across",
            "spikesnap": "cursor",
            "spikedash": "dot",
            "spikethickness": 1,
            "rangeselector": {
                "buttons": [
                    {"count": 6, "label": "6h", "step": "hour", "stepmode": "backward"},
                    {"count": 1, "label": "1d", "step": "day", "stepmode": "backward"},
                    {"count": 7, "label": "7d", "step": "day", "stepmode": "backward"},
                    {"step": "all", "label": "all"},
                ]
            },
        },
        yaxis={
            "title": "",
            "type": "category",
            "categoryorder": "array",
            "categoryarray": list(reversed(apps)),
            "showgrid": True,
            "gridcolor": "#ddd",
        },
    )
    if not records:
        fig.add_annotation(text="no deploy attempts in this range", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")  # fmt: skip
    if overlay is not None:
        _add_overlay(fig, overlay, records)
    if time_range is not None:
        fig.update_xaxes(range=[t.astimezone(UTC) for t in time_range])
    return fig


def time_range(
    records: Sequence[AuditRecord], *, since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime] | None:
    """The range a timeline shows: ``since``..``until`` (else now), or the deploys' own range padded."""
    if since is not None:
        return since, until or now
    if not records:
        return None
    times = [r.attempt.started_at.astimezone(UTC) for r in records]
    pad = max(timedelta(minutes=5), (max(times) - min(times)) / 20)
    return min(times) - pad, until or (max(times) + pad)


def _add_overlay(fig: go.Figure, overlay: Overlay, records: Sequence[AuditRecord]) -> None:
    """The metric on ``yaxis2`` (top), the deploy lanes below it, a dotted line at each deploy."""
    lanes = int(fig.layout.height or 320)
    height = lanes + OVERLAY_HEIGHT
    split = (lanes - 110) / (height - 110)
    for i, series in enumerate(overlay.series):
        fig.add_trace(
            go.Scatter(
                x=list(series.times),
                y=list(series.values),
                mode="lines",
                name=html.escape(series.name)[:80],
                legendgroup="metric",
                legendgrouptitle_text="metric",
                yaxis="y2",
                line={"color": OVERLAY_COLOURS[i % len(OVERLAY_COLOURS)], "width": 1.6},
                hovertemplate="%{y:.4g}<br>%{x|%Y-%m-%d %H:%M} UTC<extra>%{fullData.name}</extra>",
            )
        )
    deployed = sorted(
        (r for r in records if r.result in RAN), key=lambda r: r.attempt.started_at
    )
    fig.update_layout(
        height=height,
        yaxis={"domain": [0.0, max(0.2, split - 0.04)]},
        yaxis2={
            "domain": [min(0.8, split + 0.02), 1.0],
            "anchor": "x",
            "title": html.escape(overlay.title)[:60],
            "showgrid": True,
            "gridcolor": "#eee",
            "rangemode": "tozero",
        },
        shapes=[
            {"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
             "line": {"color": "#999", "width": 1, "dash": "dot"}, "layer": "below"}
            for x in [r.attempt.started_at.astimezone(UTC) for r in deployed[-MAX_DEPLOY_LINES:]]
        ],  # fmt: skip
    )
    if not overlay.points:
        fig.add_annotation(text="the metric has no points in this range", showarrow=False, x=0.5, y=0.95,
                           xref="paper", yref="paper")  # fmt: skip


def write_timeline(
    records: Sequence[AuditRecord],
    path: str | Path,
    *,
    title: str = "Deploys",
    overlay: Overlay | None = None,
    time_range: tuple[datetime, datetime] | None = None,
    unverified: Mapping[int, str] | None = None,
    verifications: Sequence[Verification] = (),
) -> Path:
    """Write the timeline to ``path``: ``.html`` (self-contained) or ``.png`` (via headless Chromium)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise InvalidInputError(f"{target}: the timeline is written as .html or .png")
    fig = build_figure(records, title=title, overlay=overlay, time_range=time_range, unverified=unverified,
                       verifications=verifications)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            render_png(fig, target)
        else:
            fig.write_html(target, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    except OSError as exc:
        raise TimelineError(f"{target}: cannot write the timeline: {exc}") from exc
    log.info("timeline.written", path=str(target), attempts=len(records))
    return target


def find_chromium() -> str | None:
    """A Chromium or Chrome binary: ``$DEPLOYCTL_CHROMIUM`` or the first on the PATH."""
    explicit = settings.CHROMIUM.get()
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def render_png(fig: go.Figure, target: Path, *, width: int = 1400) -> None:
    """Screenshot the figure's self-contained HTML with headless Chromium (no network, no downloads)."""
    chromium = find_chromium()
    if chromium is None:
        raise TimelineError(
            "a PNG timeline needs Chromium (apt-get install chromium) or DEPLOYCTL_CHROMIUM; "
            "write --output deploys.html instead"
        )
    height = int(fig.layout.height or 500)
    static: dict[str, Any] = {"staticPlot": True, "displayModeBar": False}
    fig = go.Figure(fig).update_layout(width=width, height=height)
    with tempfile.TemporaryDirectory(prefix="deployctl-timeline-") as tmp:
        page = Path(tmp) / "timeline.html"
        fig.write_html(page, include_plotlyjs=True, full_html=True, config=static)
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            "--disable-dev-shm-usage", f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}",
            "--virtual-time-budget=10000", f"--screenshot={target.resolve()}", page.as_uri(),
        ]  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TimelineError(f"{chromium} could not render the timeline: {exc}") from exc
        if done.returncode != 0 or not target.exists():
            raise TimelineError(f"{chromium} could not render the timeline: {done.stderr.strip()[-500:]}")
