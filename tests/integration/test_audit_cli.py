"""The history, events export and timeline commands over a real SQLite audit store."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.model.audit import EVENT_FIELDS
from deployctl.views.timeline import find_chromium
from tests.fixtures.auditdata import make_attempt, sha

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def audit(tmp_path: Path) -> str:
    """An audit store with five attempts over ten days, two of them one release."""
    url = f"sqlite://{tmp_path}/audit.db"
    store = open_store(url)
    rows = [
        # days ago, env, app, new sha, release, result
        (10, "production", "web", "a1", "e1", "succeeded"),
        (3, "staging", "api", "b2", "e2", "failed"),
        (1, "production", "web", "c3", "e3", "succeeded"),
        (1, "production", "api", "c4", "e3", "blocked"),
        (0, "production", "web", "d5", "e4", None),
    ]
    for days, env, app, new, release, result in rows:
        started = NOW - timedelta(days=days, minutes=5)
        attempt_id = store.start(
            make_attempt(env=env, app=app, new_sha=sha(new), deploy_commit=sha(release), started_at=started)
        )
        if result:
            error = "image not found" if result == "failed" else None
            store.finish(attempt_id, result=result, error=error, finished_at=started + timedelta(seconds=30))
    store.close()
    return url


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_history_lists_attempts_newest_first_as_a_table(audit: str) -> None:
    code, out = run("history", "--audit", audit)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["STARTED", "(UTC)", "ENV", "APP", "RESULT", "SHA", "FROM", "AUTHOR", "TOOK",
                                "TRIGGER", "BY", "RELEASE", "CHANGE", "APPROVED"]  # fmt: skip
    assert [line.split()[4] for line in lines[1:]] == [
        "started",
        "blocked",  # same start as the next: the later id first
        "succeeded",
        "failed",
        "succeeded",
    ]
    assert "d5d5d5d5d5d5" in lines[1] and "Ann Author" in lines[1] and "30.0s" in lines[2]


def test_history_filters_by_env_app_since_and_sha(audit: str) -> None:
    code, out = run("history", "--audit", audit, "--env", "production", "--app", "web", "--since", "2d")
    assert code == 0
    assert len(out.splitlines()) == 3 and "a1a1a1" not in out
    code, out = run("history", "--audit", audit, "--sha", "b2b2b2b2", "-o", "json")
    assert [r["new_sha"] for r in json.loads(out)] == [sha("b2")]
    code, out = run(
        "history", "--audit", audit, "--until", (NOW - timedelta(days=5)).isoformat(), "-o", "json"
    )
    assert [r["new_sha"] for r in json.loads(out)] == [sha("a1")]


def test_history_by_release_groups_attempts_of_one_deploy_commit(audit: str) -> None:
    code, out = run("history", "--audit", audit, "--by-release", "--since", "2d")
    assert code == 0
    headings = [line for line in out.splitlines() if line.startswith("release ")]
    assert [h.split()[1] for h in headings] == [sha("e4")[:12], sha("e3")[:12]]
    e3_block = out.split(headings[1])[1]
    assert "c3c3c3c3c3c3" in e3_block and "c4c4c4c4c4c4" in e3_block


def test_history_json_and_csv_carry_the_export_fields(audit: str) -> None:
    _, out = run("history", "--audit", audit, "-o", "json")
    records = json.loads(out)
    assert [tuple(r) for r in records] == [(*EVENT_FIELDS, "chain_verified", "chain_unverified_reason")] * 5
    assert records[3]["error"] == "image not found"
    assert {(r["chain_verified"], r["chain_unverified_reason"]) for r in records} == {(True, None)}
    _, out = run("history", "--audit", audit, "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0]) == (*EVENT_FIELDS, "chain_verified", "chain_unverified_reason") and len(rows) == 5
    assert rows[0]["workloads"] == "deployment/web" and rows[0]["release"] == sha("e4")


def forge_and_edit(url: str) -> int:
    """Behind deployctl's back: insert a 'succeeded' staging attempt with plain SQL (a hostile actor name and
    result), and edit the outcome of the failed staging attempt into a success. Returns the forged id."""
    conn = sqlite3.connect(url.removeprefix("sqlite://"))
    try:
        forged = conn.execute(
            "INSERT INTO attempts (env, app, namespace, workloads, previous_sha, new_sha, image, deploy_file, "
            "reviewers, trigger, actor_user, actor_host, started_at) SELECT env, app, namespace, workloads, "
            "previous_sha, new_sha, image, deploy_file, reviewers, trigger, ?, actor_host, ? FROM attempts "
            "WHERE id = 2", ("\x1b]0;mallory\x07", (NOW - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        ).lastrowid
        conn.execute("INSERT INTO outcomes (attempt_id, result, finished_at, recorded_at) VALUES (?, ?, ?, ?)",
                     (forged, "succeeded\x1b[2J", "2024-05-01T12:00:00.000000Z", "2024-05-01T12:00:00.000000Z"))
        conn.execute("DROP TRIGGER outcomes_append_only_update")
        conn.execute("UPDATE outcomes SET result = 'succeeded', error = NULL WHERE attempt_id = 2")
        conn.commit()
    finally:
        conn.close()
    assert forged is not None
    return forged


def test_history_marks_rows_that_do_not_verify_and_says_why(audit: str) -> None:
    forged = forge_and_edit(audit)
    code, out = run("history", "--audit", audit)
    assert code == 0, out
    table, note = out.split("\n\n")
    marked = [line for line in table.splitlines() if "(UNTRUSTED)" in line]
    assert len(marked) == 2 and "\x1b" not in out
    assert marked[0].split()[2:5] == ["staging", "api", "succeeded\\x1b[2J"] and "\\x1b]0;mallory\\x07" in marked[0]
    assert marked[1].split()[2:5] == ["staging", "api", "succeeded"]
    lines = note.splitlines()
    assert lines[0] == ("UNTRUSTED: 2 attempt(s) above do not verify in the audit chain; what their rows say "
                        "may not have happened (docs/audit.md):")
    assert lines[1].endswith(f"staging api: attempt {forged} was inserted with SQL: it carries no chain hash, "
                             "and deployctl writes every row with one")
    assert lines[2].endswith("staging api: chain row #4 (the outcome of attempt 2 (succeeded)) was edited after it "
                             "was written (by a role that may update the table, e.g. the owner) or inserted with a "
                             "made-up hash: its content does not match its hash")
    assert lines[3] == "Check the whole chain with `deployctl audit verify`."
    assert sum("(UNTRUSTED)" in line for line in run("history", "--audit", audit, "--by-release")[1].splitlines()) == 2

    records = {r["id"]: r for r in json.loads(run("history", "--audit", audit, "-o", "json")[1])}
    assert [i for i, r in records.items() if not r["chain_verified"]] == [forged, 2]
    assert records[forged]["chain_unverified_reason"].startswith(f"attempt {forged} was inserted with SQL")
    assert records[1]["chain_verified"] is True and records[1]["chain_unverified_reason"] is None

    code, one = run("history", "--audit", audit, "--id", str(forged))
    assert code == 0 and "(UNTRUSTED)" in one and f"attempt {forged} was inserted with SQL" in one
    doc = json.loads(run("history", "--audit", audit, "--id", "2", "-o", "json")[1])
    assert doc["chain_verified"] is False and "was edited after it was written" in doc["chain_unverified_reason"]
    assert "UNTRUSTED" not in run("history", "--audit", audit, "--id", "1")[1]


def test_the_timeline_draws_rows_that_do_not_verify_apart(audit: str, tmp_path: Path) -> None:
    forged = forge_and_edit(audit)
    code, out = run("timeline", "--audit", audit, "--out", str(tmp_path / "t.html"))
    assert code == 0, out
    html = (tmp_path / "t.html").read_text()
    assert '"name":"untrusted"' in html and html.count("UNTRUSTED") == 2
    assert f"attempt {forged} was inserted with SQL" in html


def test_history_with_a_bad_since_exits_2_and_says_what_to_write(audit: str) -> None:
    code, out = run("history", "--audit", audit, "--since", "last week")
    assert code == 2
    assert "Invalid value for '--since': 'last week' is not a time: use an ISO time" in out


def test_history_of_a_missing_store_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    code, out = run("history", "--audit", f"sqlite://{tmp_path}/nope.db")
    assert code == 1
    assert (
        out.strip()
        == f"Error: no audit database at {tmp_path}/nope.db; pass --audit URL or set DEPLOYCTL_AUDIT"
    )


def test_history_reads_the_store_from_the_environment(audit: str) -> None:
    result = CliRunner().invoke(main, ["history", "-o", "json"], env={"DEPLOYCTL_AUDIT": audit})
    assert result.exit_code == 0 and len(json.loads(result.output)) == 5


def test_export_jsonl_round_trips_every_attempt_oldest_first(audit: str) -> None:
    code, out = run("events", "export", "--format", "jsonl", "--audit", audit)
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["new_sha"][:2] for e in events] == ["a1", "b2", "c3", "c4", "d5"]
    store = open_store(audit)
    try:
        from deployctl.model.audit import record_to_event

        # every record's export fields, then whether its rows verify in the audit chain (all of them do here)
        chain = {"chain_verified": True, "chain_unverified_reason": None}
        assert events == [{**record_to_event(r), **chain} for r in reversed(store.query())]
    finally:
        store.close()
    _, recent = run("events", "export", "--since", "2d", "--audit", audit)
    assert len(recent.splitlines()) == 3


def test_timeline_writes_a_self_contained_html_chart(audit: str, tmp_path: Path) -> None:
    out_file = tmp_path / "deploys.html"
    code, out = run("timeline", "--audit", audit, "--out", str(out_file))
    assert code == 0 and out.strip() == f"{out_file}: 5 deploy attempt(s)"
    page = out_file.read_text()
    assert "<script src=" not in page  # plotly.js is inlined: the file works offline
    for text in ("web", "api", "succeeded", "failed", "blocked", "#d62728", sha("b2")[:12], "Ann Author",
                 "Fix checkout rounding"):  # fmt: skip
        assert text in page


def test_timeline_rejects_other_file_types(audit: str, tmp_path: Path) -> None:
    code, out = run("timeline", "--audit", audit, "--out", str(tmp_path / "deploys.svg"))
    assert code == 2 and "the timeline is written as .html or .png" in out


@pytest.mark.skipif(find_chromium() is None, reason="PNG rendering needs chromium (apt-get install chromium)")
def test_timeline_renders_a_png_with_headless_chromium(audit: str, tmp_path: Path) -> None:
    out_file = tmp_path / "deploys.png"
    code, out = run("timeline", "--audit", audit, "--out", str(out_file))
    assert code == 0, out
    data = out_file.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_timeline_png_without_chromium_says_what_to_install(
    audit: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("DEPLOYCTL_CHROMIUM", raising=False)
    code, out = run("timeline", "--audit", audit, "--out", str(tmp_path / "d.png"))
    assert code == 1 and "needs Chromium (apt-get install chromium)" in out


def test_old_output_file_forms_still_work_with_a_deprecation_warning(audit: str, tmp_path: Path) -> None:
    chart = tmp_path / "old.html"
    result = CliRunner().invoke(main, ["timeline", "--audit", audit, "-o", str(chart)])
    assert result.exit_code == 0 and chart.stat().st_size > 1000
    assert f"deprecated: -o/--output FILE; write --out {chart}" in result.stderr
    export_file = tmp_path / "old.jsonl"
    result = CliRunner().invoke(main, ["events", "export", "--audit", audit, "--output", str(export_file)])
    assert result.exit_code == 0 and "deprecated:" in result.stderr
    new_file = tmp_path / "new.jsonl"
    assert run("events", "export", "--audit", audit, "--out", str(new_file))[0] == 0
    assert export_file.read_text() == new_file.read_text() and len(new_file.read_text().splitlines()) == 5


def test_env_and_app_filters_are_repeatable_and_comma_separated(audit: str) -> None:
    _, everything = run("history", "--audit", audit, "-o", "json")
    _, both = run("history", "--audit", audit, "--app", "web,api", "-o", "json")
    _, repeated = run("history", "--audit", audit, "--app", "web", "--app", "api", "-o", "json")
    _, web = run("history", "--audit", audit, "--app", "web", "-o", "json")
    assert json.loads(both) == json.loads(repeated) == json.loads(everything)
    assert {r["app"] for r in json.loads(web)} == {"web"} and len(json.loads(web)) < len(json.loads(everything))
