"""Pre-deploy Jobs (apps.<app>.pre_deploy): a data migration runs with the new image before the rollout,
once per SHA, against the real control plane (kwok runs a Job's pods to completion, or fails them)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client, watch

from deployctl.app.run import run_reconcile
from deployctl.cli import main
from deployctl.edges.audit import url as audit_location
from deployctl.model.audit_target import AuditTarget
from deployctl.reconcile.options import ReconcileOptions, Timing

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"
OPTIONS = ReconcileOptions(timing=Timing(timeout=90, poll_interval=0.2))


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def config(ns: str, pre_deploy: dict[str, str]) -> str:
    lines = ["version: 1", "apps:"]
    for app, deps in (("api", []), ("web", ["api"])):
        lines += [f"  {app}:", f"    image: {IMAGE}/{app}", "    pin: tag"]
        if deps:
            lines.append(f"    depends_on: [{', '.join(deps)}]")
        if app in pre_deploy:
            lines.append(f"    pre_deploy: {pre_deploy[app]}")
    return "\n".join([*lines, "environments:", "  staging:", f"    namespace: {ns}"]) + "\n"


def files(ns: str, word: str, pre_deploy: dict[str, str]) -> dict[str, str]:
    out = {"deployctl.yaml": config(ns, pre_deploy)}
    for app in ("api", "web"):
        out[f"environments/staging/{app}.deploy"] = f"{sha(app + word)}\n* {app} {word}\n"
    return out


def job_spec(app: str, *, fails: bool = False) -> dict[str, Any]:
    pod_labels = {"deployctl.dev/simulate": "job-fails"} if fails else {}
    return {"backoffLimit": 0, "template": {"metadata": {"labels": pod_labels}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": app, "image": f"{IMAGE}/{app}:template",
                                                  "command": ["/app/migrate"]}]}}}


def template_meta(ns: str, name: str, app: str) -> dict[str, Any]:
    return {"name": name, "namespace": ns, "labels": {"deployctl.dev/app": app, "deployctl.dev/hook": "pre-deploy"}}


def create_cronjob_template(cluster, ns: str, app: str) -> None:
    body = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": template_meta(ns, "migrate", app),
            "spec": {"schedule": "0 0 1 1 *", "suspend": True, "jobTemplate": {"spec": job_spec(app)}}}
    with cluster.api() as api:
        client.BatchV1Api(api).create_namespaced_cron_job(ns, body)


def create_job_template(cluster, ns: str, app: str, *, fails: bool) -> None:
    spec = {**job_spec(app, fails=fails), "suspend": True}
    body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": template_meta(ns, "migrate", app), "spec": spec}
    with cluster.api() as api:
        client.BatchV1Api(api).create_namespaced_job(ns, body)


def jobs(cluster, ns: str) -> list[Any]:
    """The Jobs deployctl made (not the templates)."""
    with cluster.api() as api:
        found = client.BatchV1Api(api).list_namespaced_job(ns).items
    return [j for j in found if "deployctl.dev/hook" not in (j.metadata.labels or {})]


def first_change(cluster, list_name: str, ns: str, since: str, matches) -> int:
    """The resourceVersion of the first change (since ``since``) of an object that ``matches``: the server's
    own order of writes, replayed from its watch history."""
    with cluster.api() as api:
        batch, apps = client.BatchV1Api(api), client.AppsV1Api(api)
        lister = getattr(batch, list_name, None) or getattr(apps, list_name)
        stream = watch.Watch()
        for event in stream.stream(lister, ns, resource_version=since, timeout_seconds=60):
            if matches(event["object"]):
                stream.stop()
                return int(event["object"].metadata.resource_version)
    raise AssertionError(f"no matching change in {list_name} since {since}")


def image(obj: Any) -> str:
    return obj.spec.template.spec.containers[0].image


def events(url: str, app: str) -> list[Any]:
    store = audit_location.open_store(url)
    try:
        record = store.query(app=app)[0]
        return store.events_of(record.id)
    finally:
        store.close()


def test_a_pre_deploy_job_runs_with_the_new_image_before_the_deployment_changes(
        cluster, namespace, make_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    for app in ("api", "web"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    create_cronjob_template(cluster, namespace, "api")
    with cluster.api() as api:
        since = client.AppsV1Api(api).list_namespaced_deployment(namespace).metadata.resource_version
    repo = make_repo()
    repo.commit(files(namespace, "one", {"api": "cronjob/migrate"}), message="Deploy one")
    new = f"{IMAGE}/api:{sha('apione')}"

    result = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                           options=OPTIONS)

    assert result.exit_code == 0, result.outcomes
    [job] = jobs(cluster, namespace)
    assert image(job) == new and job.status.succeeded == 1
    assert job.metadata.annotations["deployctl.dev/commit"] == sha("apione")
    completed = first_change(cluster, "list_namespaced_job", namespace, since, lambda j: image(j) == new and any(
        c.type == "Complete" and c.status == "True" for c in (j.status.conditions or [])))
    rolled = first_change(cluster, "list_namespaced_deployment", namespace, since,
                          lambda d: d.metadata.name == "api" and image(d) == new)
    assert completed < rolled  # the Job had completed, with the new image, before the Deployment changed
    with cluster.api() as api:  # the template is not a workload: its image is left as it was
        template = client.BatchV1Api(api).read_namespaced_cron_job("migrate", namespace)
    assert template.spec.job_template.spec.template.spec.containers[0].image == f"{IMAGE}/api:template"
    recorded = [e for e in events(url, "api") if e.kind == "pre-deploy"]
    assert [e.detail for e in recorded] == [
        f"job/{job.metadata.name}: created from cronjob/migrate, image {new}", f"job/{job.metadata.name}: complete"]
    assert len(job.metadata.name) <= 63


def test_a_failing_pre_deploy_job_stops_the_rollout_and_its_dependents(cluster, namespace, make_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    for app in ("api", "web"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    create_job_template(cluster, namespace, "api", fails=True)
    repo = make_repo()
    repo.commit(files(namespace, "one", {"api": "job/migrate"}), message="Deploy one")

    result = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                           options=OPTIONS)

    assert result.exit_code == 1
    by_app = {o.app: o for o in result.outcomes}
    assert by_app["api"].result == "failed"
    assert "pre-deploy job/migrate-" in by_app["api"].message and "BackoffLimitExceeded" in by_app["api"].message
    assert by_app["web"].result == "blocked" and "dependency api failed" in by_app["web"].message
    for app in ("api", "web"):  # neither Deployment was applied
        assert image(cluster.read_deployment(namespace, app)) == f"{IMAGE}/{app}:initial"
    assert [j.status.failed for j in jobs(cluster, namespace)] == [1]
    assert any(e.kind == "pre-deploy" and "BackoffLimitExceeded" in e.detail for e in events(url, "api"))

    again = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                          options=OPTIONS)  # once per SHA: the failed Job is not retried behind a person's back
    assert {o.app: o.result for o in again.outcomes} == {"api": "failed", "web": "blocked"}
    assert "BackoffLimitExceeded" in {o.app: o for o in again.outcomes}["api"].message
    assert len(jobs(cluster, namespace)) == 1


def test_a_second_reconcile_does_not_run_the_job_again(cluster, namespace, make_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    for app in ("api", "web"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    create_job_template(cluster, namespace, "api", fails=False)
    repo = make_repo()
    repo.commit(files(namespace, "one", {"api": "job/migrate"}), message="Deploy one")
    assert run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                         options=OPTIONS).exit_code == 0
    [job] = jobs(cluster, namespace)
    with cluster.api() as api:  # drift: the same SHA is applied again, so the pre-deploy step runs again
        client.AppsV1Api(api).patch_namespaced_deployment("api", namespace, {"spec": {"template": {"spec": {
            "containers": [{"name": "api", "image": f"{IMAGE}/api:hotfix"}]}}}})

    again = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                          options=OPTIONS)

    assert {o.app: o.result for o in again.outcomes}["api"] == "drift-corrected", again.outcomes
    [same] = jobs(cluster, namespace)
    assert same.metadata.uid == job.metadata.uid  # found, not run again
    assert image(cluster.read_deployment(namespace, "api")) == f"{IMAGE}/api:{sha('apione')}"
    assert [e.detail for e in events(url, "api") if e.kind == "pre-deploy"] == [
        f"job/{job.metadata.name}: found from an earlier run for this SHA; not run again",
        f"job/{job.metadata.name}: complete"]


def test_an_unsuspended_template_is_a_clear_error_naming_it_and_nothing_is_applied(cluster, namespace, make_repo):
    for app in ("api", "web"):
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    body = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": template_meta(namespace, "migrate", "api"),
            "spec": {"schedule": "0 0 1 1 *", "suspend": False, "jobTemplate": {"spec": job_spec("api")}}}
    with cluster.api() as api:
        client.BatchV1Api(api).create_namespaced_cron_job(namespace, body)
    repo = make_repo()
    repo.commit(files(namespace, "one", {"api": "cronjob/migrate"}), message="Deploy one")

    result = CliRunner().invoke(main, ["reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig,
                                       "--no-audit", "--timeout", "60"])

    assert result.exit_code == 1, result.output
    assert (f"pre-deploy template cronjob/migrate in namespace {namespace} is not suspended; set spec.suspend: "
            "true") in result.output
    assert "Traceback" not in result.output
    assert jobs(cluster, namespace) == []
    for app in ("api", "web"):
        assert image(cluster.read_deployment(namespace, app)) == f"{IMAGE}/{app}:initial"
