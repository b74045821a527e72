"""Notifications delivered from the audit outbox to a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.notify import drain
from deployctl.edges.sinks import NotifySettings, Sink
from deployctl.model.audit import AuditStore
from tests.fixtures.auditdata import make_attempt
from tests.fixtures.httpserver import QuietHandler, serving

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook receiver that fails the first ``fail_first`` requests of every key, after
    processing them (the reply is what is lost), and deduplicates by Idempotency-Key."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.fail_first = fail_first
        self.status = status
        self.requests: Counter[str] = Counter()
        self.processed: list[dict[str, object]] = []
        self.lock = threading.Lock()

    def handle(self, key: str, body: dict[str, object]) -> int:
        with self.lock:
            self.requests[key] += 1
            if key not in {str(b["idempotency_key"]) for b in self.processed}:
                self.processed.append(body)
            return self.status if self.requests[key] <= self.fail_first else 200


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert body["idempotency_key"] == self.headers["Idempotency-Key"]
            code = state.handle(self.headers["Idempotency-Key"], body)
            self.send_response(code)
            self.end_headers()

    with serving(Handler) as address:
        yield state, f"http://{address}/hook"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    s = open_store(f"sqlite://{tmp_path}/audit.db")
    yield s
    s.close()


def _finish_some(store: AuditStore, n: int) -> list[int]:
    ids = [store.start(make_attempt(app=f"app{i}")) for i in range(n)]
    for i in ids:
        store.finish(i, result="succeeded")
    return ids


def _finish_some_in(audit: str, n: int) -> None:
    """Finish ``n`` deploys in the store at ``audit`` (as a reconcile run would), closing it after."""
    store = open_store(audit)
    _finish_some(store, n)
    store.close()


def _hook(store: AuditStore, url: str, **sink: int) -> NotifySettings:
    """A webhook sink named "hook" at ``url``, registered with the store: it gets events from now on."""
    settings = NotifySettings((Sink(type="webhook", name="hook", url=url, **sink),))
    drain(store, settings, max_wait_seconds=0)
    return settings


def test_retried_events_reach_a_deduplicating_receiver_exactly_once(
    store: AuditStore, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.fail_first = 2
    settings = _hook(store, url)
    ids = _finish_some(store, 5)

    report = drain(store, settings, max_wait_seconds=10, base_delay=0.05)

    assert report.ok and report.delivered == 5 and report.failed_attempts == 10
    assert sorted(b["id"] for b in state.processed) == ids  # each event processed exactly once
    assert set(state.requests.values()) == {3}  # delivered at least once: two lost replies, then 200
    deliveries = store.deliveries(sink="hook")  # type: ignore[attr-defined]
    assert Counter(d.ok for d in deliveries) == {False: 10, True: 5}
    assert (
        drain(store, settings, max_wait_seconds=0).delivered == 0
    )  # nothing is sent twice once acknowledged


def test_a_down_receiver_leaves_events_in_the_outbox_for_the_next_drain(
    store: AuditStore, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    dead = _hook(store, "http://127.0.0.1:9/unreachable")
    _finish_some(store, 2)  # the deploy records return without touching the network

    report = drain(store, dead, max_wait_seconds=0, base_delay=0.01)
    assert (report.delivered, report.pending, report.ok) == (0, 2, False)

    live = NotifySettings((Sink(type="webhook", name="hook", url=url),))  # same sink, receiver back up
    report = drain(store, live, max_wait_seconds=5, base_delay=0.01)
    assert (report.delivered, report.ok) == (2, True)
    assert len(state.processed) == 2


def test_a_rejected_event_is_given_up_without_retrying(
    store: AuditStore, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.fail_first, state.status = 100, 400
    settings = _hook(store, url)
    _finish_some(store, 1)
    report = drain(store, settings, max_wait_seconds=5, base_delay=0.01)
    assert len(report.gave_up) == 1 and report.delivered == 0
    assert sum(state.requests.values()) == 1
    [delivery] = store.deliveries(sink="hook")  # type: ignore[attr-defined]
    assert (delivery.ok, delivery.error, delivery.next_attempt_at) == (False, "HTTP 400 Bad Request", None)


def test_events_stop_after_max_attempts(store: AuditStore, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    state.fail_first = 100
    settings = _hook(store, url, max_attempts=3)
    _finish_some(store, 1)
    report = drain(store, settings, max_wait_seconds=5, base_delay=0.01)
    assert len(report.gave_up) == 1 and sum(state.requests.values()) == 3


def test_notify_drain_command_delivers_and_reports(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    settings = tmp_path / "settings.yaml"
    settings.write_text("notify:\n  - type: slack\n    url_env: TEST_SLACK_URL\n    name: deploys\n")
    audit = f"sqlite://{tmp_path}/audit.db"
    runner = CliRunner()
    env = {"TEST_SLACK_URL": url}
    first = runner.invoke(main, ["notify", "drain", "--audit", audit, "--settings", str(settings)], env=env)
    assert first.exit_code == 0, first.output
    _finish_some_in(audit, 2)

    result = runner.invoke(main, ["notify", "drain", "--audit", audit, "--settings", str(settings)], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "deploys: 2 delivered"
    assert all(str(b["text"]).startswith(":white_check_mark: *app") for b in state.processed)


def test_notify_drain_fails_when_events_remain_undelivered(tmp_path: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("notify:\n  - {type: webhook, url: 'http://127.0.0.1:9/x', name: hook}\n")
    audit = f"sqlite://{tmp_path}/audit.db"
    args = ["notify", "drain", "--audit", audit, "--settings", str(settings), "--max-wait", "0"]
    CliRunner().invoke(main, args)
    _finish_some_in(audit, 1)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: 1 notification(s) not delivered yet (1 waiting for a retry, 0 given up); "
        "run `deployctl notify drain` again later"
    )


def test_notify_drain_without_sinks_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["notify", "drain", "--audit", f"sqlite://{tmp_path}/a.db"], env={"DEPLOYCTL_SETTINGS": ""}
    )
    assert result.exit_code == 0
    assert "no notification sinks configured" in result.output
