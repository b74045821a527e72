"""Invalid input tells CI the truth: every target skipped for an invalid config or deploy file is a row of
the result (table and ``-o json``) with its reason, and the exit code follows the README's table (2)."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from click.testing import CliRunner

from deployctl.cli import main

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


@pytest.fixture
def production_namespace(cluster):
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def two_envs(cluster, namespace, production_namespace, make_repo):
    """api in staging and production, a deploy repo that changes both, and production's entry in
    deployctl.yaml invalid (``require_approval: maybe``)."""
    for ns in (namespace, production_namespace):
        cluster.deployment(ns, "api", image=f"{IMAGE}/api:initial")
    repo = make_repo()
    config = (
        "version: 1\napps:\n  api:\n    image: registry.example.com/shop/api\n    pin: tag\n"
        f"environments:\n  staging:\n    namespace: {namespace}\n"
        f"  production:\n    namespace: {production_namespace}\n    require_approval: maybe\n"
    )
    repo.commit({"deployctl.yaml": config,
                 "environments/staging/api.deploy": f"{sha('api-2')}\n",
                 "environments/production/api.deploy": f"{sha('api-2')}\n"})
    return repo, namespace, production_namespace


def image_of(cluster, namespace, name):
    return cluster.read_deployment(namespace, name).spec.template.spec.containers[0].image


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_reconcile_with_invalid_production_config_exits_2_and_reports_production(cluster, two_envs):
    repo, staging_ns, production_ns = two_envs
    common = ("--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--no-audit", "--timeout", "60")
    table = run("reconcile", *common)
    assert table.exit_code == 2, table.output
    rows = {tuple(line.split()[:3]) for line in table.stdout.splitlines() if line.split()}
    assert ("staging", "api", "succeeded") in rows
    assert ("production", "api", "invalid") in rows
    assert "environment production: invalid" in table.stdout
    assert "(exit 2)" in table.stdout
    # staging was applied; production, whose config is invalid, was not touched
    assert image_of(cluster, staging_ns, "api") == f"{IMAGE}/api:{sha('api-2')}"
    assert image_of(cluster, production_ns, "api") == f"{IMAGE}/api:initial"

    doc = run("reconcile", *common, "-o", "json")
    assert doc.exit_code == 2, doc.output
    result = json.loads(doc.stdout)
    assert result["exit_code"] == 2
    production = [o for o in result["outcomes"] if o["env"] == "production"]
    assert [(o["app"], o["result"]) for o in production] == [("api", "invalid")]
    assert "has errors in deployctl.yaml" in production[0]["message"]
    assert {e["env"]: e["status"] for e in result["environments"]} == {"production": "invalid", "staging": "ok"}
    assert any("require_approval must be true, false or forge" in p["message"] for p in result["problems"])


def test_plan_and_status_show_the_invalid_environment(cluster, two_envs):
    repo, _, _ = two_envs
    common = ("--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig)
    plan = run("plan", *common, "-o", "json")
    assert plan.exit_code == 2, plan.output
    changes = {(c["env"], c["app"]): c["action"] for c in json.loads(plan.stdout)["changes"]}
    assert changes == {("staging", "api"): "update", ("production", "api"): "invalid"}
    status = run("status", *common, "-o", "json")
    assert status.exit_code == 0, status.output
    doc = json.loads(status.stdout)
    assert {(a["env"], a["action"]) for a in doc["apps"]} == {("staging", "update"), ("production", "invalid")}
    assert any("require_approval must be true, false or forge" in p["message"] for p in doc["problems"])


def test_a_deploy_file_for_an_environment_missing_from_the_config_exits_2(cluster, two_envs):
    repo, staging_ns, _ = two_envs
    repo.commit({"environments/production/api.deploy": None, "environments/qa/api.deploy": f"{sha('api-3')}\n",
                 "deployctl.yaml": (
                     "version: 1\napps:\n  api:\n    image: registry.example.com/shop/api\n    pin: tag\n"
                     f"environments:\n  staging:\n    namespace: {staging_ns}\n")})
    result = run("reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--no-audit",
                 "--timeout", "60", "-o", "json")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert [(o["env"], o["result"]) for o in doc["outcomes"]] == [("staging", "succeeded")]
    assert any("environment 'qa' has no entry" in p["message"] for p in doc["problems"])


def test_an_environment_asked_for_that_the_config_does_not_name_exits_2(cluster, two_envs):
    repo, _, _ = two_envs
    result = run("reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--no-audit",
                 "--env", "prodution", "-o", "json")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["environments"] == [{"env": "prodution", "status": "invalid", "context": None,
                                    "message": "environment prodution: it has no entry under environments: "
                                    "in deployctl.yaml"}]


@pytest.fixture
def watches():
    started = []
    yield started
    for w in started:
        w.stop()


def test_watch_counts_a_run_with_an_invalid_environment_as_failed(cluster, two_envs, make_repo, tmp_path, watches):
    """The controller's per-run result tells the truth too: exit 2 in its log, 'failed' in its run metric."""
    from tests.integration.test_controller import Watch, audit_url, wait_for

    repo, staging_ns, production_ns = two_envs
    bare = make_repo("deploy.git", bare=True)
    bare.commit({path: (repo.path / path).read_text() for path in (
        "deployctl.yaml", "environments/staging/api.deploy", "environments/production/api.deploy")})
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="1h")
    watches.append(w)
    w.wait_ready()
    wait_for("staging applied", lambda: image_of(cluster, staging_ns, "api") == f"{IMAGE}/api:{sha('api-2')}",
             timeout=60)

    def failed_runs() -> float:
        _, text = w.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("deployctl_reconciles_total{") and 'status="failed"' in line)

    wait_for("the run counted as failed", failed_runs, timeout=60)
    done = [json.loads(line) for line in w.log.read_text().splitlines()
            if line.startswith("{") and '"reconcile.done"' in line]
    assert done and done[0]["exit_code"] == 2 and done[0]["invalid"] == 1, done
    assert image_of(cluster, production_ns, "api") == f"{IMAGE}/api:initial"
