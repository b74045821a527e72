"""A deploy whose audit rows do not verify in the chain never reaches a consumer as a deploy that happened
(issue 24): `events export` marks it (`chain_verified: false` and the reason) in JSON and leaves it out of
`--format cdevents`, and `notify drain` sends it to no sink, naming it. Real SQLite, a forged attempt, outcome
and outbox row inserted with plain SQL (what the writer role can do), a real loopback HTTP receiver."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from deployctl.cli import main
from deployctl.edges.audit.chain import AuditKeys
from deployctl.edges.audit.url import open_store
from tests.fixtures.auditdata import forge_copy, make_attempt
from tests.integration.test_events_webhook import _settings_file, receiver  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

KEY = "a-test-key-of-32-characters-long"
ENV = {"DEPLOYCTL_AUDIT_KEY": KEY}


def forge_deploy(db: Path, *, copy_of: int) -> int:
    """A newer `succeeded` attempt of the same deploy with its outbox event, inserted with plain SQL."""
    conn = sqlite3.connect(db)
    try:
        forged = forge_copy(conn, where="id = ?", params=(copy_of,), result="succeeded")
        (payload,) = conn.execute("SELECT payload FROM outbox WHERE attempt_id = ?", (copy_of,)).fetchone()
        event = {**json.loads(payload), "id": forged, "idempotency_key": "forged",
                 "started_at": "2099-01-01T00:00:00Z", "finished_at": "2099-01-01T00:00:30Z"}
        conn.execute("INSERT INTO outbox (key, attempt_id, payload, created_at) VALUES (?, ?, ?, ?)",
                     ("forged", forged, json.dumps(event), "2099-01-01T00:00:30.000000Z"))
        conn.commit()
    finally:
        conn.close()
    return forged


@pytest.fixture
def forged_store(tmp_path: Path) -> tuple[str, int, int]:
    """A keyed SQLite store with one true succeeded deploy and one forged after it: (url, true, forged)."""
    db = tmp_path / "audit.db"
    store = open_store(f"sqlite:///{db}", keys=AuditKeys.parse(KEY))
    try:
        true_id = store.start(make_attempt())
        store.finish(true_id, result="succeeded")
    finally:
        store.close()
    return f"sqlite:///{db}", true_id, forge_deploy(db, copy_of=true_id)


def test_events_export_marks_a_forged_deploy_in_json_and_leaves_it_out_of_cdevents(
    forged_store: tuple[str, int, int],
) -> None:
    audit, true_id, forged = forged_store
    inserted = f"attempt {forged} was inserted with SQL: it carries no chain hash"
    runner = CliRunner()
    for args in (["-o", "json"], ["-o", "jsonl"]):
        result = runner.invoke(main, ["events", "export", "--audit", audit, *args], env=ENV)
        assert result.exit_code == 0, result.output
        text = result.stdout
        rows = json.loads(text) if args[1] == "json" else [json.loads(line) for line in text.splitlines()]
        assert [(r["id"], r["result"], r["chain_verified"]) for r in rows] == [
            (true_id, "succeeded", True), (forged, "succeeded", False)]  # fmt: skip
        assert rows[0]["chain_unverified_reason"] is None
        assert rows[1]["chain_unverified_reason"].startswith(inserted)

    result = runner.invoke(main, ["events", "export", "--audit", audit, "--format", "cdevents"], env=ENV)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["data"]["customData"]["dev.deployctl"]["attemptId"] for e in events] == [true_id]
    assert f"not exported: attempt {forged} (production/web) does not verify in the audit chain: {inserted}" in (
        result.stderr
    )


def drain_to_both(audit: str, url: str, tmp_path: Path) -> tuple[Path, Result]:
    """`notify drain --from-start` to a CDEvents sink (``ce``) and a JSON sink (``json``) at ``url``."""
    settings = _settings_file(tmp_path, {"type": "webhook", "url": f"{url}/ce", "format": "cdevents", "name": "ce"},
                              {"type": "webhook", "url": f"{url}/json", "name": "json"})
    drained = CliRunner().invoke(main, ["notify", "drain", "--audit", audit, "--settings", str(settings),
                                        "--from-start", "--sink", "ce", "--sink", "json"], env=ENV)  # fmt: skip
    assert drained.exit_code == 0, drained.output
    return settings, drained


def test_notify_drain_sends_a_forged_deploy_to_no_sink_and_names_it(
    forged_store: tuple[str, int, int], receiver: tuple[list[tuple[dict[str, str], bytes]], str],  # noqa: F811
    tmp_path: Path,
) -> None:
    audit, true_id, forged = forged_store
    got, url = receiver
    settings, drained = drain_to_both(audit, url, tmp_path)
    bodies = [json.loads(body) for _, body in got]
    attempts = [b["data"]["customData"]["dev.deployctl"]["attemptId"] if "data" in b else b["id"] for b in bodies]
    assert attempts == [true_id, true_id]  # the true deploy, once per sink; never the forged one
    for sink in ("ce", "json"):
        assert (f"UNTRUSTED, {sink}: not sent: attempt {forged} does not verify in the audit chain: attempt "
                f"{forged} was inserted with SQL") in drained.output
    again = CliRunner().invoke(main, ["notify", "drain", "--audit", audit, "--settings", str(settings)], env=ENV)
    assert again.exit_code == 0 and "UNTRUSTED" not in again.output and len(got) == 2  # accounted for, not retried


def test_notify_drain_sends_no_outbox_event_that_says_other_than_its_attempts_record(
    tmp_path: Path, receiver: tuple[list[tuple[dict[str, str], bytes]], str],  # noqa: F811
) -> None:
    db = tmp_path / "audit.db"
    audit = f"sqlite:///{db}"
    store = open_store(audit, keys=AuditKeys.parse(KEY))
    try:
        true_id = store.start(make_attempt())
        store.finish(true_id, result="failed", error="rollout timed out")
    finally:
        store.close()
    conn = sqlite3.connect(db)  # the outbox is not chained: an event for the true attempt, claiming a success
    try:
        (payload,) = conn.execute("SELECT payload FROM outbox WHERE attempt_id = ?", (true_id,)).fetchone()
        claim = {**json.loads(payload), "result": "succeeded", "error": None, "new_sha": "f" * 40,
                 "idempotency_key": "forged"}  # fmt: skip
        conn.execute("INSERT INTO outbox (key, attempt_id, payload, created_at) VALUES (?, ?, ?, ?)",
                     ("forged", true_id, json.dumps(claim), "2099-01-01T00:00:30.000000Z"))
        conn.commit()
    finally:
        conn.close()
    got, url = receiver
    _, drained = drain_to_both(audit, url, tmp_path)
    bodies = [json.loads(body) for _, body in got]
    assert [(b["id"], b["result"]) for b in bodies] == [(true_id, "failed")]  # the true failure, to the JSON sink
    assert (f"UNTRUSTED, ce: not sent: attempt {true_id}: its outbox event says new_sha='{'f' * 40}' "
            "result='succeeded' where the attempt's record says new_sha=") in drained.output
