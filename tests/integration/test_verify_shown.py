"""Where a deploy's verification shows after a real reconcile --verify (real control plane, Prometheus, git and
SQLite): `deployctl timeline` marks it on the app's lane, and the dashboard's matrix, timeline page and JSON carry
it beside the rollout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from tests.integration.test_timeline_overlay import _dashboard_get, _figure
from tests.integration.test_verify import Page, config, reconcile, sha, wait_for_value
from tests.integration.test_verify import metrics_page as metrics_page  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def test_timeline_and_dashboard_mark_a_verified_and_a_failed_deploy_on_their_lane(
    cluster, namespace, make_repo, tmp_path: Path, prometheus_with: Callable[..., str],
    metrics_page: tuple[Page, str],
) -> None:
    pytest.importorskip("plotly")
    from deployctl.reconcile.observe import ClusterPool
    from deployctl.ui.data import Dashboard, RepoView

    page, target = metrics_page
    page.values[("web", "staging")] = 0.002
    url = prometheus_with("", scrape=target)
    wait_for_value(url, "web", "staging", 0.002)
    cluster.deployment(namespace, "web")
    repo = make_repo()
    notify_only = config(namespace, f"{namespace}-prod").replace("roll-forward", "notify")
    good, bad = sha("good"), sha("bad")
    repo.commit({"deployctl.yaml": notify_only, "environments/staging/web.deploy": f"{good}\n"})
    audit = f"sqlite:///{tmp_path / 'audit.db'}"
    assert reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "staging")[0] == 0
    page.values[("web", "staging")] = 0.3
    wait_for_value(url, "web", "staging", 0.3)
    repo.commit({"environments/staging/web.deploy": f"{bad}\n{good}\n"})
    assert reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "staging")[0] == 1

    # deployctl timeline: the chart marks both verdicts, the summary names the failure
    chart = tmp_path / "deploys.html"
    shown = CliRunner().invoke(main, ["timeline", "--audit", audit, "--out", str(chart)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"{chart}: 2 deploy attempt(s), 2 verification(s) (1 failed)"
    assert lines[1].startswith(f"verification-failed: staging/web {bad[:12]} (attempt ")
    assert 'deploy_error_ratio{app="web",env="staging"} = 0.3, wanted result < 0.01' in lines[1]
    as_json = CliRunner().invoke(main, ["timeline", "--audit", audit, "--out", str(chart), "-o", "json"])
    assert json.loads(as_json.output) == {"file": str(chart), "attempts": 2, "verifications": 2,
                                          "verifications_failed": 1, "verifications_untrusted": 0}
    text = chart.read_text()
    assert '"name":"verification-failed"' in text and '"name":"verified"' in text
    assert "FAIL error-rate: 0.3 (wanted result &lt; 0.01)" in text  # the hover: check, value, threshold

    # the dashboard: the matrix cell of the live SHA, the timeline page's lanes and table, the JSON
    store = open_store(audit)
    try:
        dashboard = Dashboard(RepoView(repo.path), store=store, clusters=ClusterPool(kubeconfig=cluster.kubeconfig))
        (s1, status), (s2, matrix), (s3, timeline), (s4, api), (s5, app_page) = _dashboard_get(
            dashboard, "/api/v1/status", "/ui/", "/ui/timeline", "/api/v1/timeline", "/ui/apps/web")
        (rollout,) = store.query(env="staging", app="web", sha=bad)
    finally:
        store.close()
    assert (s1, s2, s3, s4, s5) == (200, 200, 200, 200, 200)
    assert 'class="verification v-verification-failed"' in app_page and "= 0.3, wanted result &lt; 0.01" in app_page
    (cell,) = json.loads(status)["apps"]
    assert (cell["live_sha"], cell["verification"]) == (bad, "verification-failed")
    assert "= 0.3, wanted result < 0.01" in cell["verification_reason"]
    assert "The live SHA failed verification: error-rate:" in matrix
    assert 'class="verification v-verification-failed"' in matrix
    marks = {t["name"]: t for t in _figure(timeline)["data"] if t.get("legendgroup") == "verification"}
    assert set(marks) == {"verified", "verification-failed"}
    assert marks["verification-failed"]["y"] == ["web"] and marks["verified"]["y"] == ["web"]
    assert marks["verification-failed"]["marker"]["symbol"] == "x-thin-open"
    assert "v-verification-failed" in timeline and "= 0.3, wanted result &lt; 0.01" in timeline  # the table
    by_id = {e["id"]: e for e in json.loads(api)}
    assert by_id[rollout.id]["verification"] == "verification-failed"
    assert {e["verification"] for e in by_id.values()} == {"verified", "verification-failed"}
