"""The pre-deploy step in the reconciler's decisions, with an in-memory cluster (tests/fakes.py): a Job that
never completes uses up the run's timeout and blocks dependents; a missing template is a clear outcome."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from deployctl.model.state import DesiredState
from deployctl.reconcile.options import ReconcileOptions, Timing
from deployctl.reconcile.reconciler import Reconciler
from deployctl.rules.hooks import job_name
from tests.fakes import IMAGE, FakeAudit, FakeCluster, FakeClusters, deployment, desired_state, sha


def with_pre_deploy(desired: DesiredState, app: str, ref: str) -> DesiredState:
    assert desired.config is not None
    apps = {**desired.config.apps, app: replace(desired.config.apps[app], pre_deploy=ref)}
    return replace(desired, config=replace(desired.config, apps=apps))


def cluster_with_template(*apps: str) -> FakeCluster:
    cluster = FakeCluster(*(deployment(a, f"{IMAGE}/{a}:{sha(1)}", namespace="ns-staging") for a in apps))
    cluster.batch[("ns-staging", "Job", "migrate")] = template()
    return cluster


def template() -> dict[str, Any]:
    return {"metadata": {"name": "migrate", "namespace": "ns-staging", "labels": {
        "deployctl.dev/app": "api", "deployctl.dev/hook": "pre-deploy"}}, "spec": {"suspend": True, "template": {
            "spec": {"containers": [{"name": "api", "image": "old"}]}}}}


def results(cluster: FakeCluster, desired: DesiredState, timing: Timing) -> tuple[dict[str, str], dict[str, str]]:
    result = Reconciler(desired, FakeClusters(cluster), ReconcileOptions(timing=timing), audit=FakeAudit()).run()
    return {o.app: str(o.result) for o in result.outcomes}, {o.app: o.message for o in result.outcomes}


def test_the_job_runs_before_the_apps_workloads_and_once_per_sha() -> None:
    desired = with_pre_deploy(desired_state({"api": (), "web": ("api",)}), "api", "job/migrate")
    cluster = cluster_with_template("api", "web")
    found, _ = results(cluster, desired, Timing(timeout=30, poll_interval=0.02))
    assert found == {"api": "succeeded", "web": "succeeded"}
    assert cluster.applied == [f"job/{job_name('api', 'migrate', sha(2))}", "api", "web"]


def test_a_job_that_never_completes_times_out_within_the_run_and_blocks_dependents() -> None:
    desired = with_pre_deploy(desired_state({"api": (), "web": ("api",)}), "api", "job/migrate")
    cluster = cluster_with_template("api", "web")
    cluster.job_outcome["api"] = "Running"
    found, messages = results(cluster, desired, Timing(timeout=0.5, poll_interval=0.02))
    assert found["api"] == "failed" and found["web"] in ("blocked", "failed")  # web: blocked, or out of time too
    assert "did not complete before the run's timeout" in messages["api"]
    assert cluster.applied == [f"job/{job_name('api', 'migrate', sha(2))}"]  # no workload was applied


def test_a_missing_template_fails_the_app_with_a_message_naming_it() -> None:
    desired = with_pre_deploy(desired_state({"api": ()}), "api", "cronjob/nope")
    cluster = cluster_with_template("api")
    found, messages = results(cluster, desired, Timing(timeout=30, poll_interval=0.02))
    assert found == {"api": "failed"}
    assert messages["api"] == ("pre-deploy template cronjob/nope not found in namespace ns-staging "
                               "(apps.api.pre_deploy); create it, or remove the key")
    assert cluster.applied == []
