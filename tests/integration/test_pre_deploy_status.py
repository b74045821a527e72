"""`deployctl status --audit` shows the pre-deploy Job (apps.<app>.pre_deploy) of each app's desired SHA: its
name and outcome, as the attempt's record has it, after a real reconcile against the real control plane; an
attempt inserted with plain SQL does not stand for a true one, and one that is all there is shows UNTRUSTED."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deployctl.app.run import run_reconcile
from deployctl.cli import main
from deployctl.model.audit_target import AuditTarget
from tests.fixtures.auditdata import forge_copy
from tests.integration.test_pre_deploy import (
    OPTIONS,
    create_cronjob_template,
    create_job_template,
    files,
    jobs,
    sha,
)

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"


def status(repo: Any, cluster: Any, url: str, *args: str) -> str:
    shown = CliRunner().invoke(main, ["status", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig,
                                      "--audit", url, *args])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    return shown.stdout


def forge_attempt(db: Path, *, app: str, detail: str) -> int:
    """A newer attempt of ``app``'s latest SHA that failed, with a pre-deploy event, inserted with plain SQL."""
    conn = sqlite3.connect(db)
    try:
        forged = forge_copy(conn, where="app = ? ORDER BY id DESC LIMIT 1", params=(app,), result="failed")
        conn.execute("INSERT INTO attempt_events (attempt_id, seq, at, kind, detail) VALUES "
                     "(?, 1, '2099-01-01T00:00:10.000000Z', 'pre-deploy', ?)", (forged, detail))
        conn.commit()
    finally:
        conn.close()
    return forged


def test_status_shows_the_pre_deploy_job_of_the_desired_sha_and_believes_only_verified_attempts(
        cluster, namespace, make_repo, tmp_path):
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    for app in ("api", "web"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    create_cronjob_template(cluster, namespace, "api")
    repo = make_repo()
    repo.commit(files(namespace, "one", {"api": "cronjob/migrate"}), message="Deploy one")
    result = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                           options=OPTIONS)
    assert result.exit_code == 0, result.outcomes
    [job] = jobs(cluster, namespace)
    name = job.metadata.name

    rows = {r["app"]: r for r in json.loads(status(repo, cluster, url, "-o", "json"))["apps"]}
    step = rows["api"]["pre_deploy"]
    assert (rows["api"]["desired_sha"], step["job"], step["outcome"], step["detail"]) == (
        sha("apione"), name, "complete", "complete")
    assert (step["chain_verified"], step["chain_unverified_reason"]) == (True, None)
    assert rows["web"]["pre_deploy"] is None  # web names no pre-deploy Job
    assert f"pre-deploy job/{name}: complete" in status(repo, cluster, url)

    # a newer attempt inserted with SQL, claiming the Job failed, does not stand for the true one
    forged = forge_attempt(db, app="api", detail=f"job/{name}: failed: \x1b[2Jforged")
    rows = {r["app"]: r for r in json.loads(status(repo, cluster, url, "-o", "json"))["apps"]}
    assert (rows["api"]["pre_deploy"]["outcome"], rows["api"]["pre_deploy"]["chain_verified"]) == ("complete", True)
    # when it is all there is, it is shown, marked
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER attempt_events_append_only_delete")
        conn.execute("DELETE FROM attempt_events WHERE attempt_id <> ?", (forged,))
        conn.commit()
    finally:
        conn.close()
    rows = {r["app"]: r for r in json.loads(status(repo, cluster, url, "-o", "json"))["apps"]}
    step = rows["api"]["pre_deploy"]
    assert (step["outcome"], step["attempt_id"], step["chain_verified"]) == ("failed", forged, False)
    assert f"attempt {forged} was inserted with SQL" in step["chain_unverified_reason"]
    table = status(repo, cluster, url)
    assert f"pre-deploy job/{name}: failed: \\x1b[2Jforged (UNTRUSTED: its attempt's audit rows do not verify" in table
    assert "\x1b" not in table


def test_status_shows_a_failed_pre_deploy_job_with_its_reason(cluster, namespace, make_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    for app in ("api", "web"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    create_job_template(cluster, namespace, "api", fails=True)
    repo = make_repo()
    repo.commit(files(namespace, "one", {"api": "job/migrate"}), message="Deploy one")
    result = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                           options=OPTIONS)
    assert result.exit_code == 1
    [job] = jobs(cluster, namespace)

    rows = {r["app"]: r for r in json.loads(status(repo, cluster, url, "-o", "json"))["apps"]}
    step = rows["api"]["pre_deploy"]
    assert (step["job"], step["outcome"], step["chain_verified"]) == (job.metadata.name, "failed", True)
    assert "BackoffLimitExceeded" in step["detail"]
    assert rows["api"]["live_sha"] != rows["api"]["desired_sha"]  # the rollout never started
    assert f"pre-deploy job/{job.metadata.name}: failed: " in status(repo, cluster, url)
