"""A verification whose audit row does not verify in the chain (the `verifications` table is chained too,
Kind.VERIFICATION) is drawn as UNTRUSTED, never as the pass or failure it claims: by `deployctl timeline`
(chart and summary) and by the dashboard (timeline page, its table and JSON, the matrix cell of the live SHA,
the app page). Real SQLite with a `verified` row inserted with plain SQL; the dashboard served over loopback
HTTP (no browser: the marks are in the HTML and JSON it serves)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.chain import AuditKeys
from deployctl.edges.audit.url import open_store
from deployctl.model.verification import Verification, VerifyResult
from tests.fixtures.auditdata import T0, make_attempt
from tests.integration.test_timeline_overlay import _dashboard_get, _figure
from tests.integration.test_ui import config

pytestmark = pytest.mark.integration

KEY = "a-test-key-of-32-characters-long"
HOSTILE = "<img src=x onerror=window.__pwned=4>\x1b[2J"


def two_verified_deploys(db: Path) -> tuple[int, int, str]:
    """Two succeeded staging deploys of web written by deployctl with the key; the first verified by deployctl,
    the second given a `verified` row inserted with plain SQL. (true attempt, forged one's attempt, its SHA)"""
    store = open_store(f"sqlite:///{db}", keys=AuditKeys.parse(KEY))
    try:
        first, second = store.start_many([
            make_attempt(env="staging", app="web", namespace="shop-staging", new_sha="a" * 40),
            make_attempt(env="staging", app="web", namespace="shop-staging", started_at=T0 + timedelta(hours=1))])
        store.finish(first, result="succeeded")
        store.finish(second, result="succeeded")
        store.record_verification(Verification(
            attempt_id=first, env="staging", app="web", sha="a" * 40, result=VerifyResult.VERIFIED,
            reason="all checks passed", checks=(), started_at=T0, finished_at=T0 + timedelta(minutes=5)))
        (forged_sha,) = {r.attempt.new_sha for r in store.query() if r.id == second}
    finally:
        store.close()
    conn = sqlite3.connect(db)
    try:
        conn.execute("INSERT INTO verifications (attempt_id, result, reason, checks, trigger, started_at, "
                     "finished_at, recorded_at) VALUES (?, 'verified', ?, '[]', 'manual', ?, ?, ?)",
                     (second, HOSTILE, *["2024-05-01T13:10:00.000000Z"] * 3))  # fmt: skip
        conn.commit()
    finally:
        conn.close()
    return first, second, forged_sha


def test_deployctl_timeline_draws_a_forged_verification_as_untrusted(tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    db = tmp_path / "audit.db"
    _, second, forged_sha = two_verified_deploys(db)
    chart = tmp_path / "deploys.html"
    env = {"DEPLOYCTL_AUDIT_KEY": KEY}
    shown = CliRunner().invoke(main, ["timeline", "--audit", f"sqlite:///{db}", "--out", str(chart)], env=env)
    assert shown.exit_code == 0, shown.output
    first_line, untrusted = shown.output.splitlines()
    assert first_line == f"{chart}: 2 deploy attempt(s), 2 verification(s) (0 failed, 1 UNTRUSTED)"
    assert untrusted.startswith(f"UNTRUSTED: staging/web {forged_sha[:12]} (attempt {second}) claims verified at ")
    assert f"verification 2 of attempt {second} (verified) was inserted with SQL" in untrusted
    as_json = CliRunner().invoke(main, ["timeline", "--audit", f"sqlite:///{db}", "--out", str(chart), "-o", "json"],
                                 env=env)  # fmt: skip
    assert json.loads(as_json.output) == {"file": str(chart), "attempts": 2, "verifications": 2,
                                          "verifications_failed": 0, "verifications_untrusted": 1}
    text = chart.read_text()
    assert '"name":"untrusted verification"' in text and "circle-x-open" in text
    assert "<img src=x" not in text  # the forged reason is shown escaped in the hover


def test_the_dashboard_draws_a_forged_verification_as_untrusted(tmp_path: Path, deploy_repo) -> None:  # noqa: ANN001
    pytest.importorskip("plotly")
    from deployctl.model.state import DesiredState, Target
    from deployctl.rules.plan import Action, Change
    from deployctl.ui.data import Dashboard, RepoView, build_snapshot
    from deployctl.ui.server import _templates
    from tests.fakes import deployment

    deploy_repo.commit({"deployctl.yaml": config("shop-staging", "shop")}, message="config")
    db = tmp_path / "audit.db"
    first, second, forged_sha = two_verified_deploys(db)
    inserted = f"verification 2 of attempt {second} (verified) was inserted with SQL"
    store = open_store(f"sqlite:///{db}", keys=AuditKeys.parse(KEY))
    try:
        dashboard = Dashboard(RepoView(deploy_repo.path), store=store, clusters=None)
        (s1, timeline), (s2, api) = _dashboard_get(dashboard, "/ui/timeline", "/api/v1/timeline")
        # the matrix cell of an app whose live SHA is the one with the forged verification
        desired = dashboard.repo.read()
        target = Target("staging", "web", forged_sha, f"r/web:{forged_sha}", "shop-staging", "web",
                        "environments/staging/web.deploy", 1, ())  # fmt: skip
        running = Change("staging", "web", Action.IN_SYNC, "shop-staging", target, old_sha=forged_sha,
                         workloads=(deployment("web", f"r/web:{forged_sha}", namespace="shop-staging"),))  # fmt: skip
        verified = dashboard.live_verifications([running])
    finally:
        store.close()
    assert (s1, s2) == (200, 200)

    marks = {t["name"]: t for t in _figure(timeline)["data"] if t.get("legendgroup") == "verification"}
    assert set(marks) == {"verified", "untrusted verification"}
    assert len(marks["verified"]["x"]) == 1 and len(marks["untrusted verification"]["x"]) == 1
    assert marks["untrusted verification"]["text"][0].startswith(
        f"<b>UNTRUSTED</b> verification, not in the audit chain: {inserted}")
    assert timeline.count('<span class="badge untrusted">untrusted</span> <span class="claimed">claims verified') == 1
    assert "<img src=x" not in timeline
    by_id = {e["id"]: e for e in json.loads(api)}
    assert (by_id[second]["verification"], by_id[second]["verification_chain_verified"]) == ("verified", False)
    assert inserted in by_id[second]["verification_chain_unverified_reason"]
    assert (by_id[first]["verification_chain_verified"], by_id[first]["verification_chain_unverified_reason"]) == (
        True, None)

    assert inserted in (verified[("staging", "web")].chain_unverified or "")
    snapshot = build_snapshot(DesiredState(desired.config, (target,), (), "HEAD", "c" * 40), [running], refused={},
                              last={}, now=T0, verified=verified)  # fmt: skip
    (cell,) = snapshot.cells
    assert (cell.as_dict()["verification"], cell.as_dict()["verification_chain_verified"]) == ("verified", False)
    matrix = _templates().get_template("_matrix.html").render(snap=snapshot, poll_seconds=5, path="/ui/",
                                                              viewer=None)  # fmt: skip
    assert '<span class="badge untrusted">untrusted</span> <span class="claimed">claims verified' in matrix
    assert 'class="verification v-verified"' not in matrix and "Untrusted: the live SHA" in matrix
    trusted = replace(cell.verification, chain_unverified=None)
    plain = build_snapshot(DesiredState(desired.config, (target,), (), "HEAD", "c" * 40), [running], refused={},
                           last={}, now=T0, verified={("staging", "web"): trusted})  # fmt: skip
    assert 'class="verification v-verified"' in _templates().get_template("_matrix.html").render(
        snap=plain, poll_seconds=5, path="/ui/", viewer=None)
