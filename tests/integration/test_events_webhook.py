"""CDEvents over HTTP from the audit outbox to a real loopback receiver, structured and binary."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deployctl.cli import main as cli
from deployctl.edges.audit.url import open_store
from deployctl.edges.notify import drain
from deployctl.edges.sinks import parse_settings
from tests.fixtures.auditdata import T0, make_attempt
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


def _audit_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}" if backend == "sqlite" else str(request.getfixturevalue("postgres_db"))


def _deploy(store: Any, n: int) -> list[int]:
    ids = []
    for i in range(n):
        attempt = store.start(make_attempt(app=f"app{i}", started_at=T0 + timedelta(minutes=i)))
        store.finish(attempt, result="succeeded")
        ids.append(attempt)
    return ids


def _settings_file(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(json.dumps({"notify": list(entries)}))  # JSON is YAML
    return path


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_event_ids_from_cdevents_export_equal_those_delivered_to_a_webhook(
    backend: str, receiver: tuple[list[tuple[dict[str, str], bytes]], str], tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    got, url = receiver
    audit = _audit_url(backend, tmp_path, request)
    settings = _settings_file(tmp_path, {"type": "webhook", "url": f"{url}/ce", "format": "cdevents",
                                         "source": "/deployctl/acme", "name": "ce"})
    runner = CliRunner()
    drained = runner.invoke(cli, ["notify", "drain", "--audit", audit, "--settings", str(settings)])
    assert drained.exit_code == 0, drained.output
    store = open_store(audit)
    try:
        _deploy(store, 3)
    finally:
        store.close()
    drained = runner.invoke(cli, ["notify", "drain", "--audit", audit, "--settings", str(settings)])
    assert drained.exit_code == 0, drained.output
    delivered = [json.loads(body)["id"] for _, body in got]
    assert [h["idempotency-key"] for h, _ in got] == delivered

    out = tmp_path / "deploys.ndjson"
    exported = runner.invoke(cli, ["events", "export", "--audit", audit, "--format", "cdevents",
                                   "--source", "/deployctl/acme", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(delivered) == 3 and [e["id"] for e in lines] == delivered
    assert all(e["id"] == e["data"]["context"]["id"] for e in lines)
    assert_valid(lines[0]["data"])
    stdout = runner.invoke(cli, ["events", "export", "--audit", audit, "--format", "cdevents"])
    assert [json.loads(line)["id"] for line in stdout.output.splitlines()] == delivered  # NDJSON on stdout


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_sink_added_after_three_deploys_receives_them_with_from_start(
    backend: str, receiver: tuple[list[tuple[dict[str, str], bytes]], str], tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    got, url = receiver
    audit = _audit_url(backend, tmp_path, request)
    first = {"type": "webhook", "url": f"{url}/first", "format": "cdevents", "name": "first"}
    runner = CliRunner()
    assert runner.invoke(cli, ["notify", "drain", "--audit", audit,
                               "--settings", str(_settings_file(tmp_path, first))]).exit_code == 0
    store = open_store(audit)
    try:
        _deploy(store, 3)
    finally:
        store.close()
    late = {"type": "webhook", "url": f"{url}/late", "format": "cdevents", "name": "late"}
    settings = str(_settings_file(tmp_path, first, late))
    drained = runner.invoke(cli, ["notify", "drain", "--audit", audit, "--settings", settings])
    assert drained.exit_code == 0, drained.output
    first_ids = [json.loads(b)["id"] for h, b in got]
    assert len(first_ids) == 3  # the late sink starts from its registration: nothing yet
    got.clear()

    drained = runner.invoke(cli, ["notify", "drain", "--audit", audit, "--settings", settings,
                                  "--sink", "late", "--from-start", "-o", "json"])
    assert drained.exit_code == 0, drained.output
    assert json.loads(drained.output)["delivered_by_sink"] == {"late": 3}
    assert [json.loads(b)["id"] for h, b in got] == first_ids  # the same ids: a consumer dedupes by them
    got.clear()
    again = runner.invoke(cli, ["notify", "drain", "--audit", audit, "--settings", settings,
                                "--sink", "late", "--from-start"])
    assert again.exit_code == 0 and got == []  # a backfill never repeats what the sink received


def test_from_start_without_a_sink_is_a_usage_error(tmp_path: Path) -> None:
    settings = _settings_file(tmp_path, {"type": "webhook", "url": "http://127.0.0.1:9/x", "name": "a"})
    result = CliRunner().invoke(cli, ["notify", "drain", "--audit", f"sqlite:///{tmp_path / 'a.db'}",
                                      "--settings", str(settings), "--from-start"])
    assert result.exit_code == 2 and "--sink NAME" in result.output
