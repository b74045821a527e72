"""The Job made from a pre-deploy template, its name and its state (deployctl.rules.hooks)."""

from __future__ import annotations

from typing import Any

import pytest

from deployctl.errors import PreDeployError
from deployctl.model.config.values import DNS_LABEL
from deployctl.rules.hooks import job_from_template, job_name, job_state

SHA = "a" * 40
IMAGE = "registry.example.com/shop/api:" + SHA


def template(kind: str = "Job", *, suspend: Any = True, labels: dict[str, str] | None = None,
             container: str = "api") -> dict[str, Any]:
    pod = {"metadata": {"labels": {"team": "db", "batch.kubernetes.io/controller-uid": "u1", "job-name": "migrate"}},
           "spec": {"restartPolicy": "Never", "containers": [
               {"name": "sidecar", "image": "proxy:1"}, {"name": container, "image": "api:old", "args": ["migrate"]}]}}
    job = {"backoffLimit": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
           "ttlSecondsAfterFinished": 60, "template": pod}
    meta = {"name": "migrate", "namespace": "shop", "uid": "u0", "resourceVersion": "9",
            "labels": labels if labels is not None else {"deployctl.dev/app": "api", "deployctl.dev/hook": "pre-deploy"}}
    if kind == "CronJob":
        return {"metadata": meta, "spec": {"suspend": suspend, "schedule": "@yearly", "jobTemplate": {
            "metadata": {"labels": {"from": "cron"}}, "spec": job}}}
    return {"metadata": meta, "spec": {**job, "suspend": suspend}}


def make(obj: dict[str, Any], ref: str = "job/migrate") -> dict[str, Any]:
    return job_from_template(obj, ref=ref, app="api", sha=SHA, container="api", image=IMAGE,
                             annotations={"deployctl.dev/commit": SHA})


@pytest.mark.parametrize(("kind", "ref"), [("Job", "job/migrate"), ("CronJob", "cronjob/migrate")])
def test_the_job_is_the_templates_spec_with_the_new_image_unsuspended(kind: str, ref: str) -> None:
    obj = template(kind)
    job = make(obj, ref)
    spec = job["spec"]
    assert spec["template"]["spec"]["containers"] == [
        {"name": "sidecar", "image": "proxy:1"}, {"name": "api", "image": IMAGE, "args": ["migrate"]}]
    assert "suspend" not in spec and "selector" not in spec and "ttlSecondsAfterFinished" not in spec
    assert spec["template"]["metadata"]["labels"] == {"team": "db"}  # the old Job's generated labels are dropped
    meta = job["metadata"]
    assert meta["name"] == job_name("api", "migrate", SHA) and meta["namespace"] == "shop"
    assert meta["labels"]["deployctl.dev/app"] == "api" and "deployctl.dev/hook" not in meta["labels"]
    assert meta["annotations"]["deployctl.dev/commit"] == SHA
    assert meta["annotations"]["deployctl.dev/pre-deploy-template"] == ref
    assert "uid" not in meta and "resourceVersion" not in meta
    assert obj == template(kind)  # the template itself is not changed


def test_the_job_name_is_the_same_for_a_sha_different_for_another_and_a_dns_label() -> None:
    name = job_name("api", "m" * 63, SHA)
    assert name == job_name("api", "m" * 63, SHA) != job_name("api", "m" * 63, "b" * 40)
    assert job_name("api", "migrate", SHA) != job_name("web", "migrate", SHA)
    assert len(name) <= 63 and DNS_LABEL.fullmatch(name)
    assert DNS_LABEL.fullmatch(job_name("api", "m" * 37 + "-x", SHA))  # cut at a '-': still a label


@pytest.mark.parametrize(("obj", "says"), [
    (template(suspend=False), "job/migrate in namespace shop is not suspended; set spec.suspend: true"),
    (template("CronJob", suspend=None), "is not suspended"),
    (template(labels={"deployctl.dev/app": "api"}), "is not labelled deployctl.dev/hook=pre-deploy and "
                                                    "deployctl.dev/app=api"),
    (template(labels={"deployctl.dev/app": "web", "deployctl.dev/hook": "pre-deploy"}), "is not labelled"),
    (template(container="main"), "has no container 'api' (the app's container)"),
    ({"metadata": {"name": "migrate", "namespace": "shop", "labels": {
        "deployctl.dev/app": "api", "deployctl.dev/hook": "pre-deploy"}}, "spec": {"suspend": True, "template": 7}},
     "has no container 'api'"),
])
def test_a_bad_template_is_an_error_naming_the_object(obj: dict[str, Any], says: str) -> None:
    ref = "cronjob/migrate" if "schedule" in obj["spec"] else "job/migrate"
    with pytest.raises(PreDeployError, match="pre-deploy template") as caught:
        make(obj, ref)
    assert says in str(caught.value)


def test_the_state_of_a_job_comes_from_its_conditions_with_the_reason_escaped_and_bounded() -> None:
    assert job_state({"status": {"active": 1}}) == job_state({})
    assert not job_state({}).complete and not job_state({}).failed
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).complete
    assert not job_state({"status": {"conditions": [{"type": "Complete", "status": "False"}]}}).complete
    failed = job_state({"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "\x1b[31mred" + "x" * 500}]}})
    assert failed.failed and failed.reason.startswith("DeadlineExceeded: \\x1b[31mred")
    assert len(failed.reason) < 320 and "\x1b" not in failed.reason
