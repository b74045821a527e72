"""`deployctl timeline --overlay`: a product metric from a real Prometheus (or a CSV) above the
deploy lanes, over the same time range, with the deploys' commit messages in hover."""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.metrics import load_overlay
from deployctl.views.timeline import build_figure, find_chromium, time_range
from tests.fixtures.auditdata import make_attempt, sha

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = NOW - timedelta(days=3)
CHANGE = NOW - timedelta(days=1, hours=12)


def openmetrics() -> str:
    """checkout_confirmed: 100 every 5 minutes, 40 from the change on."""
    lines = ["# TYPE checkout_confirmed gauge"]
    at = START
    while at <= NOW - timedelta(hours=1):
        value = 100 if at < CHANGE else 40
        lines.append(f'checkout_confirmed{{shop="eu"}} {value} {int(at.timestamp())}')
        at += timedelta(minutes=5)
    return "\n".join([*lines, "# EOF", ""])


def audit_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = open_store(url)
    deploys = [
        ("web", "production", CHANGE - timedelta(hours=3), "Domains: new verification flow"),
        ("web", "production", START + timedelta(hours=6), "Tidy the footer"),
        ("search", "production", CHANGE - timedelta(hours=1), "Faster facets"),
        ("web", "staging", CHANGE - timedelta(hours=8), "Domains: new verification flow"),
    ]
    try:
        for i, (app, env, at, message) in enumerate(deploys):
            attempt = store.start(
                make_attempt(app=app, env=env, started_at=at, new_sha=sha(f"{i + 3}"), app_commit_summary=message)
            )
            store.finish(attempt, result="succeeded", finished_at=at + timedelta(seconds=40))
    finally:
        store.close()
    return url


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_prometheus_series_is_drawn_above_the_filtered_deploys(
    prometheus_with: Callable[[str], str], tmp_path: Path
) -> None:
    url = prometheus_with(openmetrics())
    audit = audit_db(tmp_path)
    since, until = START.isoformat(), (NOW - timedelta(hours=1)).isoformat()
    out = tmp_path / "deploys.html"
    args = ["timeline", "--audit", audit, "--env", "production", "--app", "web", "--since", since,
            "--until", until, "--overlay", f"prometheus={url}", "--query", "checkout_confirmed"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 deploy attempt(s)" in result.output and "metric point(s) in 1 series" in result.output
    page = out.read_text()
    assert "Domains: new verification flow" in page and "Faster facets" not in page

    # the figure's data, built the same way: the series on its own axis, the deploys below
    store = open_store(audit)
    try:
        records = store.query(env="production", app="web", since=START, until=NOW - timedelta(hours=1))
    finally:
        store.close()
    span = time_range(records, since=START, until=NOW - timedelta(hours=1), now=NOW)
    assert span is not None
    overlay = load_overlay(f"prometheus={url}", query="checkout_confirmed", start=span[0], end=span[1])
    fig = build_figure(records, overlay=overlay, time_range=span)
    metric = [t for t in fig.data if t.yaxis == "y2"]
    assert len(metric) == 1 and metric[0].name == "shop=eu"
    times = [datetime.fromisoformat(str(t)) if isinstance(t, str) else t for t in metric[0].x]
    values = list(metric[0].y)
    assert len(values) > 300
    assert all(v == 100 for t, v in zip(times, values, strict=True) if t < CHANGE - timedelta(minutes=10))
    assert all(v == 40 for t, v in zip(times, values, strict=True) if t > CHANGE + timedelta(minutes=10))
    markers = [t for t in fig.data if t.yaxis in (None, "y") and t.mode == "markers" and t.x[0] is not None]
    assert sorted(x for t in markers for x in t.x) == sorted(r.attempt.started_at for r in records)
    assert any("Domains: new verification flow" in text for t in markers for text in t.text)
    assert len(fig.layout.shapes) == 2  # a line through both panels at each deploy
    assert fig.layout.yaxis2.domain[0] > fig.layout.yaxis.domain[1]  # the metric is above the lanes
    assert [datetime.fromisoformat(str(x)) if isinstance(x, str) else x for x in fig.layout.xaxis.range] == list(span)

    if find_chromium() is None:
        pytest.skip("no chromium: the PNG rendering is not checked (apt-get install chromium)")
    png = tmp_path / "deploys.png"
    rendered = CliRunner().invoke(main, [*args, "--output", str(png)])
    assert rendered.exit_code == 0, rendered.output
    width, height = png_size(png)
    assert width == 1400 and height >= 500
    assert png.stat().st_size > 20_000  # a drawn chart, not a blank page


def test_csv_overlay_with_series_and_a_header(tmp_path: Path) -> None:
    audit = audit_db(tmp_path)
    csv = tmp_path / "confirmed.csv"
    rows = ["time,value,series"]
    for hour in range(0, 60):
        at = START + timedelta(hours=hour)
        rows.append(f"{at.isoformat()},{100 if at < CHANGE else 40},eu")
        rows.append(f"{int(at.timestamp())},{50},us")
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "deploys.html"
    result = CliRunner().invoke(
        main, ["timeline", "--audit", audit, "--env", "production", "--overlay", f"csv={csv}", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "3 deploy attempt(s), 120 metric point(s) in 2 series" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--overlay", "graphite=http://x"], "give prometheus=http://host:9090"),
        (["--query", "up"], "--query goes with --overlay"),
        (["--overlay", "prometheus=http://127.0.0.1:9"], "needs --query"),
        (["--overlay", "csv=missing.csv"], "missing.csv: cannot read the metric CSV"),
    ],
)
def test_overlay_mistakes_are_clear_errors(tmp_path: Path, args: list[str], message: str) -> None:
    audit = audit_db(tmp_path)
    result = CliRunner().invoke(main, ["timeline", "--audit", audit, *args, "--output", str(tmp_path / "t.html")])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def _dashboard_get(dashboard: object, *paths: str) -> list[tuple[int, str]]:
    """GET ``paths`` from the dashboard app (on loopback), in a thread of its own (Playwright may hold a loop)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp.test_utils import TestClient, TestServer

    from deployctl.ui.auth import UiAuth
    from deployctl.ui.server import make_app

    async def scenario() -> list[tuple[int, str]]:
        app = make_app(dashboard, UiAuth.for_listener("127.0.0.1"))  # type: ignore[arg-type]
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            out = []
            for path in paths:
                response = await client.get(path)
                out.append((response.status, await response.text()))
            return out

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, scenario()).result(timeout=120)


def _figure(page: str) -> dict:
    import html
    import json
    import re

    found = re.search(r'<script type="application/json" id="timeline-data">(.*?)</script>', page, re.S)
    assert found is not None, "the page has no chart"
    return json.loads(html.unescape(found.group(1)))


def test_the_dashboard_timeline_offers_the_same_overlay(
    prometheus_with: Callable[[str], str], tmp_path: Path, deploy_repo
) -> None:
    pytest.importorskip("plotly")
    from deployctl.ui.data import Dashboard, OverlaySource, RepoView

    url = prometheus_with(openmetrics())
    store = open_store(audit_db(tmp_path))
    try:
        dashboard = Dashboard(RepoView(deploy_repo.path), store=store, clusters=None,
                              overlay=OverlaySource(f"prometheus={url}", "checkout_confirmed"))
        since, until = START.isoformat(), (NOW - timedelta(hours=1)).isoformat()
        window = f"env=production&app=web&since={since}&until={until}".replace("+", "%2B")
        (status, page), (off_status, off) = _dashboard_get(
            dashboard, f"/ui/timeline?{window}", f"/ui/timeline?{window}&overlay=off")
    finally:
        store.close()
    assert status == 200 and off_status == 200
    figure = _figure(page)
    metric = [t for t in figure["data"] if t.get("yaxis") == "y2"]
    assert len(metric) == 1 and metric[0]["name"] == "shop=eu" and len(metric[0]["y"]) > 300
    assert "checkout_confirmed" in page  # the reader sees which metric is drawn, and can turn it off
    assert not [t for t in _figure(off)["data"] if t.get("yaxis") == "y2"]


def test_a_dashboard_overlay_whose_prometheus_is_down_still_shows_the_deploys(tmp_path: Path, deploy_repo) -> None:
    pytest.importorskip("plotly")
    from deployctl.ui.data import Dashboard, OverlaySource, RepoView

    store = open_store(audit_db(tmp_path))
    try:
        dashboard = Dashboard(RepoView(deploy_repo.path), store=store, clusters=None,
                              overlay=OverlaySource("prometheus=http://127.0.0.1:9", "up"))
        [(status, page)] = _dashboard_get(dashboard, f"/ui/timeline?since={START.isoformat().replace('+', '%2B')}")
    finally:
        store.close()
    assert status == 200 and "The metric could not be drawn" in page
    assert any(t.get("mode") == "markers" for t in _figure(page)["data"])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ui", "--repo", ".", "--overlay", "graphite=http://x"], 2, "give prometheus=http://host:9090"),
        (["ui", "--repo", ".", "--overlay", "prometheus=http://127.0.0.1:9"], 2, "needs --query"),
        (["ui", "--repo", ".", "--query", "up"], 2, "--query goes with --overlay"),
        (["watch", "--repo", ".", "--ui-query", "up"], 2, "--ui-query goes with --ui-overlay"),
        (["watch", "--repo", ".", "--ui-overlay", "csv=x.csv", "--ui-query", "up"], 2, "not with a CSV"),
    ],
)
def test_a_dashboard_overlay_mistake_is_a_clear_error_before_serving(args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    assert message in result.output
