"""Reconcile against the real local control plane, from real git repos."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from click.testing import CliRunner

from deployctl.app.run import Callbacks, run_reconcile
from deployctl.cli import main
from deployctl.devtools.localcluster import controlplane
from deployctl.edges.git.repo import read_desired_state
from deployctl.model.audit_target import AUDIT_OFF
from deployctl.reconcile import reconciler as rec
from deployctl.reconcile.observe import observe
from deployctl.reconcile.options import ReconcileOptions, Selection, Timing
from deployctl.rules.plan import make_plan

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def config(envs: dict[str, str], deps: dict[str, list[str]] | None = None) -> str:
    deps = deps if deps is not None else {"api": [], "web": ["api"], "worker": []}
    lines = ["version: 1", "apps:"]
    for app, depends in deps.items():
        lines.append(f"  {app}:")
        lines.append(f"    image: {IMAGE}/{app}")
        lines.append("    pin: tag")  # no registry here; digest pinning is tested in test_reconcile_digest.py
        if depends:
            lines.append(f"    depends_on: [{', '.join(depends)}]")
    lines.append("environments:")
    for env, ns in envs.items():
        lines += [f"  {env}:", f"    namespace: {ns}"]
    return "\n".join(lines) + "\n"


def deploy_files(env: str, shas: dict[str, str]) -> dict[str, str]:
    return {f"environments/{env}/{app}.deploy": f"{s}\n* deploy {app}\n" for app, s in shas.items()}


@pytest.fixture
def shop(cluster, namespace, make_repo):
    """Three labelled Deployments (api, web, worker) and a deploy repo pointing staging at them."""
    for app in ("api", "web", "worker"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    repo = make_repo()
    shas = {app: sha(f"{app}-1") for app in ("api", "web", "worker")}
    repo.commit({"deployctl.yaml": config({"staging": namespace}), **deploy_files("staging", shas)},
                message="First deploy")
    return repo, shas


def reconcile_repo(cluster, repo, *, timeout=60, poll_interval=0.2, apps=(), allowed_namespaces=()):
    desired = read_desired_state(repo.path)
    assert desired.ok, desired.problems
    pool = rec.ClusterPool(kubeconfig=cluster.kubeconfig)
    options = ReconcileOptions(selection=Selection(apps=tuple(apps), allowed_namespaces=tuple(allowed_namespaces)),
                               timing=Timing(timeout=timeout, poll_interval=poll_interval))
    return rec.Reconciler(desired, pool, options).run()


def image_of(cluster, namespace, name):
    return cluster.read_deployment(namespace, name).spec.template.spec.containers[0].image


def test_first_deploy_applies_every_image_with_annotations_and_waits_for_rollouts(cluster, namespace, shop):
    repo, shas = shop
    result = reconcile_repo(cluster, repo)
    assert result.exit_code == 0, result.outcomes
    assert {o.app: o.result for o in result.outcomes} == {"api": "succeeded", "web": "succeeded",
                                                          "worker": "succeeded"}
    d = cluster.read_deployment(namespace, "web")
    assert d.spec.template.spec.containers[0].image == f"{IMAGE}/web:{shas['web']}"
    ann = d.metadata.annotations
    assert ann["deployctl.dev/commit"] == shas["web"]
    assert ann["deployctl.dev/deploy-commit"] == repo.head
    assert ann["deployctl.dev/deploy-file"] == "environments/staging/web.deploy"
    assert ann["deployctl.dev/applied-at"].endswith("Z")
    assert shas["web"][:12] in ann["kubernetes.io/change-cause"]
    assert d.status.updated_replicas == d.status.available_replicas == 1
    managers = {m.manager for m in d.metadata.managed_fields}
    assert "deployctl" in managers


def test_second_run_with_nothing_changed_makes_zero_writes(cluster, namespace, shop):
    repo, _ = shop
    assert reconcile_repo(cluster, repo).exit_code == 0
    again = reconcile_repo(cluster, repo)
    assert again.exit_code == 0
    assert {o.result for o in again.outcomes} == {"in-sync"}
    assert again.writes() == 0
    assert again.requests.get("PATCH", 0) == 0
    assert again.requests.get("GET", 0) == 4  # one LIST per managed kind (Deployment, StatefulSet, DaemonSet, CronJob)
    assert again.requests.get("WATCH", 0) == 0  # nothing to wait for: no watch opened


def test_update_rolls_forward_from_old_sha_to_new_sha(cluster, namespace, shop):
    repo, shas = shop
    reconcile_repo(cluster, repo)
    new = sha("api-2")
    repo.commit({"environments/staging/api.deploy": f"{new}\n{shas['api']}\n"}, message="Deploy api 2")
    result = reconcile_repo(cluster, repo)
    outcomes = {o.app: o for o in result.outcomes}
    assert outcomes["api"].result == "succeeded"
    assert (outcomes["api"].old_sha, outcomes["api"].new_sha) == (shas["api"], new)
    assert outcomes["web"].result == outcomes["worker"].result == "in-sync"
    assert image_of(cluster, namespace, "api") == f"{IMAGE}/api:{new}"


def test_drift_made_with_a_direct_patch_is_reported_and_corrected(cluster, namespace, shop):
    from kubernetes import client

    repo, shas = shop
    reconcile_repo(cluster, repo)
    with cluster.api() as api:  # what `kubectl set image` does
        client.AppsV1Api(api).patch_namespaced_deployment(
            "worker", namespace,
            {"spec": {"template": {"spec": {"containers": [{"name": "worker", "image": f"{IMAGE}/worker:hotfix"}]}}}},
        )
    desired = read_desired_state(repo.path)
    plan = make_plan(desired, observe(desired, rec.ClusterPool(kubeconfig=cluster.kubeconfig)))
    assert str(plan.get("staging", "worker").action) == "drift"
    result = reconcile_repo(cluster, repo)
    assert {o.app: o.result for o in result.outcomes}["worker"] == "drift-corrected"
    assert image_of(cluster, namespace, "worker") == f"{IMAGE}/worker:{shas['worker']}"


def test_failed_rollout_reports_the_reason_and_blocks_dependents_while_independent_apps_succeed(
    cluster, namespace, make_repo
):
    cluster.deployment(namespace, "api", never_ready=True, progress_deadline=2)
    cluster.deployment(namespace, "web")
    cluster.deployment(namespace, "worker")
    repo = make_repo()
    shas = {app: sha(f"{app}-fail") for app in ("api", "web", "worker")}
    repo.commit({"deployctl.yaml": config({"staging": namespace}), **deploy_files("staging", shas)})
    result = reconcile_repo(cluster, repo)
    outcomes = {o.app: o for o in result.outcomes}
    assert outcomes["api"].result == "failed"
    assert "ProgressDeadlineExceeded" in outcomes["api"].message
    assert "ImagePullBackOff" in outcomes["api"].message
    assert outcomes["web"].result == "blocked"
    assert "dependency api failed" in outcomes["web"].message
    assert outcomes["worker"].result == "succeeded"
    assert result.exit_code == 1
    assert image_of(cluster, namespace, "web") == "registry.example.com/shop/app:initial"  # never patched


def test_dependency_is_healthy_before_its_dependent_is_patched(cluster, namespace, shop):
    repo, _ = shop
    result = reconcile_repo(cluster, repo)
    outcomes = {o.app: o for o in result.outcomes}
    api_done = outcomes["api"].finished_at
    web_started = outcomes["web"].started_at
    assert api_done is not None and web_started is not None
    assert api_done <= web_started
    api = cluster.read_deployment(namespace, "api")
    available_at = next(c.last_update_time for c in api.status.conditions if c.type == "Available")
    applied_web = cluster.read_deployment(namespace, "web").metadata.annotations["deployctl.dev/applied-at"]
    assert available_at.strftime("%Y-%m-%dT%H:%M:%SZ") <= applied_web


def test_unlabelled_workloads_are_never_touched(cluster, namespace, shop):
    repo, _ = shop
    cluster.deployment(namespace, "web-by-hand", app="", container="web", image=f"{IMAGE}/web:by-hand")
    reconcile_repo(cluster, repo)
    assert image_of(cluster, namespace, "web-by-hand") == f"{IMAGE}/web:by-hand"
    assert "deployctl.dev/commit" not in (cluster.read_deployment(namespace, "web-by-hand").metadata.annotations or {})


def test_workload_without_the_configured_container_is_invalid_not_guessed(cluster, namespace, make_repo):
    cluster.deployment(namespace, "api", container="server")
    repo = make_repo()
    repo.commit({"deployctl.yaml": config({"staging": namespace}, {"api": []}),
                 **deploy_files("staging", {"api": sha("x")})})
    result = reconcile_repo(cluster, repo)
    (outcome,) = result.outcomes
    assert outcome.result == "invalid"
    assert "has no container 'api'" in outcome.message
    assert result.exit_code == 2
    assert result.writes() == 0


def test_namespace_not_allowed_is_refused_and_nothing_is_written(cluster, namespace, shop):
    repo, _ = shop
    result = reconcile_repo(cluster, repo, allowed_namespaces=["somewhere-else"])
    assert result.exit_code == 2
    assert {o.result for o in result.outcomes} == {"refused"}
    assert "not allowed by --allow-namespace" in result.outcomes[0].message
    assert result.writes() == 0
    assert image_of(cluster, namespace, "api") == f"{IMAGE}/api:initial"


def test_cli_reconcile_exit_codes_and_summary(cluster, namespace, shop, tmp_path):
    repo, _ = shop
    runner = CliRunner()
    args = ["reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--no-audit",
            "--timeout", "60"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "3 succeeded" in first.stdout
    second = runner.invoke(main, [*args, "-o", "json"])
    assert second.exit_code == 0
    import json

    doc = json.loads(second.stdout)
    assert doc["counts"] == {"in-sync": 3}
    assert doc["requests"].get("PATCH", 0) == 0
    status = runner.invoke(main, ["status", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig])
    assert status.exit_code == 0
    assert status.stdout.count("healthy") == 3


def test_unreachable_cluster_exits_3_with_a_clear_message(shop, tmp_path):
    repo, _ = shop
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: secret-token-value}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    result = CliRunner().invoke(main, ["reconcile", "--repo", str(repo.path), "--kubeconfig", str(kubeconfig),
                                       "--no-audit"])
    assert result.exit_code == 3
    assert "environment staging (context x, server https://127.0.0.1:1) is unreachable: cannot reach the " \
           "Kubernetes API at https://127.0.0.1:1" in result.output
    assert "secret-token-value" not in result.output
    assert "Traceback" not in result.output


def test_api_server_restart_during_a_reconcile_and_the_next_run_converges(make_repo, tmp_path):
    from tests.fixtures.cluster import LocalCluster, _skip_reason

    if _skip_reason():
        pytest.skip(_skip_reason())
    directory = tmp_path / "cluster"
    state = controlplane.up(directory)
    try:
        own = LocalCluster(dir=directory, kubeconfig=state.kubeconfig, server=state.server)
        own.create_namespace("shop")
        for app in ("api", "web", "worker"):
            own.deployment("shop", app)
        repo = make_repo()
        shas = {app: sha(f"{app}-restart") for app in ("api", "web", "worker")}
        repo.commit({"deployctl.yaml": config({"staging": "shop"}), **deploy_files("staging", shas)})

        outcome: dict[str, object] = {}
        acting = threading.Event()  # the first run reached the cluster: it applies or waits for a rollout

        def first_run() -> None:
            try:
                outcome["result"] = run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=state.kubeconfig,
                                                  audit=AUDIT_OFF, options=ReconcileOptions(timing=Timing(timeout=30)),
                                                  callbacks=Callbacks(on_progress=lambda _p: acting.set()))
            except Exception as exc:  # the restart may surface as an unreachable cluster
                outcome["error"] = exc
            finally:
                acting.set()

        thread = threading.Thread(target=first_run)
        thread.start()
        assert acting.wait(60)
        controlplane.restart_component(directory, "kube-apiserver")
        thread.join(120)
        assert not thread.is_alive()
        deadline = time.monotonic() + 120
        while True:
            try:
                second = run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=state.kubeconfig, audit=AUDIT_OFF, options=ReconcileOptions(timing=Timing(timeout=120)))
                if second.exit_code != 3 or time.monotonic() > deadline:  # unreachable: a result, exit 3
                    break
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)
        log_tail = (directory / "logs" / "kube-apiserver.log").read_text(errors="replace")[-2000:]
        assert second.exit_code == 0, (second.outcomes, outcome, log_tail)
        assert {o.result for o in second.outcomes} <= {"in-sync", "succeeded"}
        for app in ("api", "web", "worker"):
            assert image_of(own, "shop", app) == f"{IMAGE}/{app}:{shas[app]}"
    finally:
        controlplane.down(directory)
