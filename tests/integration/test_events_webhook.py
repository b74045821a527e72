"""CDEvents over HTTP from the audit outbox to a real loopback receiver, structured and binary."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deployctl.edges.audit.url import open_store
from deployctl.edges.notify import drain
from deployctl.edges.sinks import parse_settings
from tests.fixtures.auditdata import make_attempt
from tests.fixtures.cdevents import assert_valid

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[tuple[list[tuple[dict[str, str], bytes]], str]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(({k.lower(): v for k, v in self.headers.items()},
                        self.rfile.read(int(self.headers["Content-Length"]))))  # fmt: skip
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield got, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_cdevents_webhook_gets_one_valid_cloudevent_per_deploy(
    mode: str, receiver: tuple[list[tuple[dict[str, str], bytes]], str], tmp_path: Path
) -> None:
    got, url = receiver
    entry: dict[str, Any] = {"type": "webhook", "url": f"{url}/ce", "format": "cdevents", "mode": mode,
                             "source": "/deployctl/acme", "secret_env": "HOOK_SECRET"}  # fmt: skip
    settings = parse_settings({"notify": [entry]}, source="settings.yaml")
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        drain(store, settings, max_wait_seconds=0, environ={"HOOK_SECRET": "s"})
        ok = store.start(make_attempt())
        store.finish(ok, result="succeeded")
        failed = store.start(make_attempt(app="api"))
        store.finish(failed, result="failed", error="timeout")
        report = drain(store, settings, max_wait_seconds=0, environ={"HOOK_SECRET": "s"})
    finally:
        store.close()
    assert report.ok and report.delivered == 1  # the failure deployed nothing: no service event
    [(headers, body)] = got
    assert headers["x-deployctl-signature"].startswith("sha256=")
    if mode == "structured":
        assert headers["content-type"] == "application/cloudevents+json"
        envelope = json.loads(body)
        assert envelope["subject"] == "production/web" and envelope["source"] == "/deployctl/acme"
        event = envelope["data"]
    else:
        assert headers["content-type"] == "application/json"
        assert headers["ce-type"] == "dev.cdevents.service.upgraded.0.2.0"
        assert headers["ce-subject"] == "production/web" and headers["ce-specversion"] == "1.0"
        event = json.loads(body)
        assert headers["ce-id"] == event["context"]["id"] == headers["idempotency-key"]
    assert_valid(event)
    assert event["customData"]["dev.deployctl"]["attemptId"] == ok
