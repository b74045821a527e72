"""The Grafana annotation query of docs/analytics.md, run by a real Prometheus scraping the
controller's metrics: one series per app, its value the time of the last deploy."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deployctl.controller.metrics import CONTENT_TYPE, ControllerMetrics
from deployctl.reconcile.reconciler import SUCCEEDED, Outcome
from deployctl.rules.plan import Action
from tests.fixtures.auditdata import sha

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
T1 = datetime(2024, 11, 23, 9, 30, tzinfo=UTC)
T2 = datetime(2024, 11, 24, 10, 0, tzinfo=UTC)


def documented_query() -> str:
    match = re.search(r"^- Query: `([^`]+)`", DOC.read_text().split("## Grafana annotations")[1], re.M)
    assert match
    return match.group(1)


def instant(prometheus: str, query: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
        return list(json.loads(answer.read())["data"]["result"])


def wait_for(prometheus: str, query: str, ok: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        result = instant(prometheus, query)
        if ok(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_the_documented_annotation_query_gives_each_apps_last_deploy_time(
    prometheus_with: Callable[..., str],
) -> None:
    metrics = ControllerMetrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        action = next(iter(Action))
        deploy = [Outcome("production", "web", action, SUCCEEDED, new_sha=sha("1"), finished_at=T1)]
        metrics.observe_reconcile(deploy, seconds=1, trigger="watch", exit_code=0)
        prometheus = prometheus_with(scrape=f"127.0.0.1:{server.server_address[1]}")
        query = documented_query()
        first = wait_for(prometheus, query, bool)
        assert [(r["metric"]["app"], r["metric"]["sha"], float(r["value"][1])) for r in first] == [
            ("web", sha("1"), T1.timestamp() * 1000)
        ]
        upgrade = [Outcome("production", "web", action, SUCCEEDED, new_sha=sha("2"), finished_at=T2)]
        metrics.observe_reconcile(upgrade, seconds=1, trigger="watch", exit_code=0)
        latest = wait_for(prometheus, query, lambda r: [x["metric"]["sha"] for x in r] == [sha("2")])
        assert [(r["metric"]["sha"], float(r["value"][1])) for r in latest] == [(sha("2"), T2.timestamp() * 1000)]
    finally:
        server.shutdown()
        server.server_close()
