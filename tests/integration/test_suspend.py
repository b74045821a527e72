"""suspend/resume, plan --exit-code and status (--watch, -o yaml) on the real control plane."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from tests.integration.test_reconcile import IMAGE, config, deploy_files, image_of, sha

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(cluster, namespace, make_repo, tmp_path):
    for app in ("api", "web"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    repo = make_repo()
    shas = {app: sha(f"{app}-1") for app in ("api", "web")}
    repo.commit({"deployctl.yaml": config({"staging": namespace}, {"api": [], "web": []}),
                 **deploy_files("staging", shas)}, message="First deploy")
    base = ["--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig]
    return repo, shas, base, f"sqlite://{tmp_path}/audit.db"


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout


def test_suspended_app_is_left_alone_shown_by_status_and_recorded(cluster, namespace, setup):
    repo, shas, base, audit = setup
    code, out = cli("suspend", *base, "--env", "staging", "--app", "web", "--reason", "INC-42 debugging",
                    "--audit", audit, "-o", "json")
    assert code == 0, out
    [done] = json.loads(out)
    assert (done["app"], done["result"], done["changed"]) == ("web", "suspended", True)
    ann = cluster.read_deployment(namespace, "web").metadata.annotations
    assert ann["deployctl.dev/suspended"] == "true" and ann["deployctl.dev/suspended-reason"] == "INC-42 debugging"

    code, out = cli("reconcile", *base, "--timeout", "1m", "--no-audit")
    assert code == 0, out
    assert "suspended" in next(line for line in out.splitlines() if line.startswith("staging  web"))
    assert image_of(cluster, namespace, "web") == f"{IMAGE}/web:initial"  # left alone
    assert image_of(cluster, namespace, "api") == f"{IMAGE}/api:{shas['api']}"

    code, out = cli("status", *base, "-o", "yaml")
    web = next(d for d in yaml.safe_load(out)["apps"] if d["app"] == "web")
    assert web["action"] == "suspended" and web["suspended"]["reason"] == "INC-42 debugging"
    assert "INC-42 debugging" in cli("status", *base)[1]

    code, out = cli("resume", *base, "--env", "staging", "--app", "web", "--audit", audit)
    assert code == 0 and "resumed" in out
    assert "deployctl.dev/suspended" not in (cluster.read_deployment(namespace, "web").metadata.annotations or {})
    assert cli("reconcile", *base, "--timeout", "1m", "--no-audit")[0] == 0
    assert image_of(cluster, namespace, "web") == f"{IMAGE}/web:{shas['web']}"

    store = open_store(audit, create=False)
    try:
        records = store.query(app="web")
    finally:
        store.close()
    assert [r.result for r in records] == ["resumed", "suspended"]
    assert "INC-42 debugging" in (records[1].error or "")


def test_suspend_names_a_missing_app_and_changes_nothing(cluster, namespace, setup):
    _, _, base, audit = setup
    result = CliRunner().invoke(main, ["suspend", *base, "--env", "staging", "--app", "nope", "--reason", "x",
                                       "--audit", audit])
    assert result.exit_code == 2 and "deployctl.dev/app=nope" in result.output


def test_plan_exit_code_is_2_with_changes_and_0_when_in_sync(cluster, namespace, setup):
    _, _, base, _ = setup
    assert cli("plan", *base)[0] == 0
    code, out = cli("plan", *base, "--exit-code", "-o", "json")
    assert code == 2 and json.loads(out)["counts"] == {"update": 2}
    assert cli("reconcile", *base, "--timeout", "1m", "--no-audit")[0] == 0
    assert cli("plan", *base, "--exit-code")[0] == 0
    as_json, as_yaml = cli("plan", *base, "-o", "json")[1], cli("plan", *base, "-o", "yaml")[1]
    assert json.loads(as_json) == yaml.safe_load(as_yaml)
    repo = setup[0]
    repo.commit({"environments/staging/web.deploy": "not-a-sha\n"}, message="broken")
    assert cli("plan", *base)[0] == 2  # invalid input, as before
    assert cli("plan", *base, "--exit-code")[0] == 1  # with --exit-code: 1 is an error, 2 means changes


def test_status_watch_prints_a_line_per_change_when_not_a_terminal(cluster, namespace, setup):
    _, _, base, _ = setup
    code, out = cli("status", *base, "--watch", "--interval", "0.2", "--watch-count", "4")
    assert code == 0
    lines = [line.split(" ", 1)[1] for line in out.splitlines()]  # without the time stamp
    assert [line.split()[0] for line in lines[:2]] == ["staging/api:", "staging/web:"]  # all at first
    assert all(" in-sync update " in line for line in lines)
    for app in ("api", "web"):  # then a line only when something changed (e.g. the rollout became healthy)
        mine = [line for line in lines if line.startswith(f"staging/{app}:")]
        assert all(a != b for a, b in zip(mine, mine[1:], strict=False)), mine
    assert len(lines) < 8


def test_status_says_when_the_current_freeze_ends(cluster, namespace, make_repo):
    cluster.deployment(namespace, "api", image=f"{IMAGE}/api:initial")
    repo = make_repo("frozen")
    text = config({"staging": namespace}, {"api": []}) + \
        "    freeze:\n      - {from: '00:00', until: '23:59', timezone: UTC, reason: Always}\n" \
        "      - {start: 2000-01-01, end: 2100-01-01, reason: Long freeze}\n"
    repo.commit({"deployctl.yaml": text, **deploy_files("staging", {"api": sha("api-1")})}, message="frozen")
    base = ["--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig]
    doc = json.loads(cli("status", *base, "-o", "json")[1])
    assert doc["freezes"]["staging"]["until"] == "2100-01-01T00:00Z"
    assert doc["freezes"]["staging"]["rule"] == "environments.staging.freeze[1]"
    assert "freeze: staging is frozen until 2100-01-01T00:00Z (Long freeze;" in cli("status", *base)[1]


def test_watch_leaves_a_suspended_app_alone_and_says_so(cluster, namespace, make_repo, tmp_path):
    from tests.integration.test_controller import Watch, audit_url, wait_for
    from tests.integration.test_controller import config as watch_config
    from tests.integration.test_controller import deploy as watch_deploy
    from tests.integration.test_controller import sha as watch_sha

    cluster.deployment(namespace, "api", image=f"{IMAGE}/api:initial")
    bare = make_repo("deploy.git", bare=True)
    bare.commit({"deployctl.yaml": watch_config(namespace), **watch_deploy("api", "api-1")}, message="First")
    code, out = cli("suspend", "--repo", str(bare.path), "--kubeconfig", cluster.kubeconfig, "--env", "staging",
                    "--reason", "debugging", "--no-audit")
    assert code == 0, out
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="0.5s")
    try:
        w.wait_ready()
        wait_for("a suspended outcome line", lambda: '"result": "suspended"' in w.log.read_text(), timeout=30)
        assert image_of(cluster, namespace, "api") == f"{IMAGE}/api:initial"
        assert cli("resume", "--repo", str(bare.path), "--kubeconfig", cluster.kubeconfig, "--env", "staging",
                   "--no-audit")[0] == 0
        wait_for("the deploy after resume",
                 lambda: image_of(cluster, namespace, "api") == f"{IMAGE}/api:{watch_sha('api-1')}", timeout=30)
    finally:
        w.stop()
