"""The dashboard never shows an audit row that does not verify in the chain as plain history (issue 24): a
`deployctl ui` process over a real SQLite store with a row inserted behind deployctl's back, read in headless
Debian Chromium and over HTTP. Fixtures and helpers are those of test_ui.py."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from deployctl.edges.audit.chain import AuditKeys
from deployctl.edges.audit.url import open_store
from tests.fixtures.auditdata import make_attempt
from tests.integration.test_ui import browser, config, get, page, start_ui  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

KEY = "a-test-key-of-32-characters-long"
HOSTILE = "<img src=x onerror=window.__pwned=3>"


def forge_success(db: Path, *, copy_of: int) -> int:
    """A newer 'succeeded' attempt of the same deploy, inserted with plain SQL (no chain columns, no MAC)."""
    conn = sqlite3.connect(db)
    try:
        forged = conn.execute(
            "INSERT INTO attempts (env, app, namespace, workloads, previous_sha, new_sha, image, deploy_file, "
            "reviewers, trigger, actor_user, actor_host, started_at) SELECT env, app, namespace, workloads, "
            "previous_sha, new_sha, image, deploy_file, reviewers, trigger, ?, actor_host, "
            "'2099-01-01T00:00:00.000000Z' FROM attempts WHERE id = ?", (HOSTILE, copy_of),
        ).lastrowid
        conn.execute("INSERT INTO outcomes (attempt_id, result, finished_at, recorded_at) VALUES "
                     "(?, 'succeeded', '2099-01-01T00:00:30.000000Z', '2099-01-01T00:00:30.000000Z')", (forged,))
        conn.commit()
    finally:
        conn.close()
    assert forged is not None
    return forged


def test_rows_that_do_not_verify_are_marked_on_every_page_and_in_the_json(deploy_repo, page, tmp_path):  # noqa: F811
    deploy_repo.commit({"deployctl.yaml": config("shop-staging", "shop")}, message="config")
    db = tmp_path / "audit.db"
    audit = f"sqlite:///{db}"
    store = open_store(audit, keys=AuditKeys.parse(KEY))
    true_id = store.start(make_attempt(env="staging", app="api", namespace="shop-staging"))
    store.finish(true_id, result="succeeded")
    store.close()
    forged = forge_success(db, copy_of=true_id)
    inserted = f"attempt {forged} was inserted with SQL: it carries no chain hash"

    ui = start_ui(tmp_path, deploy_repo.path, audit, "--no-cluster", env={"DEPLOYCTL_AUDIT_KEY": KEY})
    try:
        page.goto(ui.url("/ui/apps/api"))
        fake = page.locator(f"ol.history > li[data-id='{forged}']")
        assert "untrusted" in (fake.get_attribute("class") or "")
        assert fake.locator(".badge.untrusted").inner_text() == "untrusted"
        assert fake.locator(".claimed").inner_text() == "claims succeeded"
        assert inserted in fake.locator(".untrusted-reason").inner_text()
        assert HOSTILE in fake.inner_text()  # shown as text, never run
        true = page.locator(f"ol.history > li[data-id='{true_id}']")
        assert true.locator(".badge.untrusted").count() == 0 and true.locator(".badge.s-succeeded").count() == 1
        page.shot("app-unverified")  # type: ignore[attr-defined]

        page.goto(ui.url(f"/ui/apps/api/attempts/{forged}"))
        assert inserted in page.locator("p.untrusted-reason").inner_text()
        assert page.locator("table.fields").inner_text().count("chain_unverified_reason") == 1
        page.goto(ui.url(f"/ui/apps/api/attempts/{true_id}"))
        assert page.locator(".untrusted-reason").count() == 0

        page.goto(ui.url("/ui/"))
        last = page.locator("td.cell[data-env='staging'][data-app='api'] dd.last")
        assert last.locator(".badge.untrusted").inner_text() == "untrusted"
        assert page.evaluate("window.__pwned") is None

        page.goto(ui.url("/ui/timeline"))
        page.wait_for_selector("#timeline .main-svg", timeout=15000)
        figure = json.loads(page.locator("#timeline-data").text_content() or "{}")
        (apart,) = [t for t in figure["data"] if t.get("name") == "untrusted"]
        assert len(apart["x"]) == 1 and apart["text"][0].startswith("<b>UNTRUSTED</b>, not in the audit chain: attempt")
        assert all(len(t["x"]) == 1 for t in figure["data"] if t.get("name") == "succeeded")  # only the true one
        assert page.locator("details table .badge.untrusted").count() == 1
        assert page.evaluate("window.__pwned") is None
        page.shot("timeline-unverified")  # type: ignore[attr-defined]
        code, body = get(ui.url("/api/v1/timeline"))
        assert code == 200 and sorted((r["id"], r["chain_verified"]) for r in json.loads(body)) == [(true_id, True),
                                                                                              (forged, False)]

        code, body = get(ui.url("/api/v1/apps/api"))
        assert code == 200
        flags = {h["id"]: (h["chain_verified"], h["chain_unverified_reason"]) for h in json.loads(body)["history"]}
        assert flags[true_id] == (True, None) and flags[forged][0] is False and inserted in flags[forged][1]
        code, body = get(ui.url("/api/v1/apps/api/history"))
        assert [(h["id"], h["chain_verified"]) for h in json.loads(body)] == [(forged, False), (true_id, True)]
        code, body = get(ui.url(f"/api/v1/apps/api/attempts/{forged}"))
        assert json.loads(body)["chain_verified"] is False
        code, body = get(ui.url("/api/v1/status"))
        (cell,) = [c for c in json.loads(body)["apps"] if (c["env"], c["app"]) == ("staging", "api")]
        assert cell["last_deploy"]["chain_verified"] is False
    finally:
        ui.stop()
