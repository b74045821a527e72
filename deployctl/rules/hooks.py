"""Pre-deploy Jobs (``apps.<app>.pre_deploy``): the Job made from a template, its name, and its state. Pure.

A template is a Job or a CronJob, suspended, labelled ``deployctl.dev/hook=pre-deploy`` and
``deployctl.dev/app=<app>`` in the app's namespace: the labels are the cluster owner's consent that this
object may be run with the images the deploy repo names. The Job made from it is named from the app, the
template and the SHA, so it runs once per SHA: a second reconcile finds it and does not run it again.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployctl.errors import PreDeployError
from deployctl.model.printable import printable
from deployctl.model.workload import APP_LABEL, HOOK_LABEL, PRE_DEPLOY_HOOK

ANN_TEMPLATE = "deployctl.dev/pre-deploy-template"
MAX_REASON = 300  # characters of a Job's failure reason kept in an outcome
# Labels the Job controller writes on a Job's pod template; a copy must not carry the old Job's.
_GENERATED_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid", "job-name", "batch.kubernetes.io/job-name")


@dataclass(frozen=True)
class JobState:
    """Where a pre-deploy Job stands: still running, complete, or failed with the Job's reason."""

    complete: bool = False
    failed: bool = False
    reason: str = ""


def parse_ref(ref: str) -> tuple[str, str]:
    """``job/<name>`` or ``cronjob/<name>`` (checked by the config loader) as (kind, name)."""
    kind, _, name = ref.partition("/")
    return ("CronJob" if kind == "cronjob" else "Job"), name


def job_name(app: str, template: str, sha: str) -> str:
    """The Job of ``template`` for ``sha``: the same name every run (at most 63 characters, a DNS label)."""
    digest = hashlib.sha256(f"{app}\0{template}\0{sha}".encode()).hexdigest()[:10]
    return f"{template[:38].rstrip('-')}-{sha[:12]}-{digest}"


def job_from_template(obj: Mapping[str, Any], *, ref: str, app: str, sha: str, container: str, image: str,
                      annotations: Mapping[str, str]) -> dict[str, Any]:
    """The Job to create from the template ``obj`` (the JSON of ``ref``): its spec with ``container``'s image
    set to ``image``, unsuspended, named by :func:`job_name`. Raises :class:`PreDeployError` naming the object."""
    kind, name = parse_ref(ref)
    meta = obj.get("metadata") or {}
    where = f"{ref} in namespace {meta.get('namespace', '')}"
    labels = meta.get("labels") or {}
    if labels.get(HOOK_LABEL) != PRE_DEPLOY_HOOK or labels.get(APP_LABEL) != app:
        raise PreDeployError(f"pre-deploy template {where} is not labelled {HOOK_LABEL}={PRE_DEPLOY_HOOK} and "
                             f"{APP_LABEL}={app}; label it to let deployctl run it before {app}'s rollouts")
    spec = _mapping(obj.get("spec"))
    if spec.get("suspend") is not True:
        raise PreDeployError(f"pre-deploy template {where} is not suspended; set spec.suspend: true (a template "
                             "must not run by itself with the old image)")
    job_meta: Mapping[str, Any] = {}
    if kind == "CronJob":
        job_template = _mapping(spec.get("jobTemplate"))
        job_meta = _mapping(job_template.get("metadata"))
        spec = _mapping(job_template.get("spec"))
    job_spec = copy.deepcopy(spec)
    for key in ("selector", "manualSelector", "suspend", "ttlSecondsAfterFinished"):
        job_spec.pop(key, None)  # a fresh selector; the finished Job stays as the record that this SHA ran
    pod = job_spec.get("template")
    pod_spec = pod.get("spec") if isinstance(pod, dict) else None
    containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
    found = [c for c in containers or [] if isinstance(c, dict) and c.get("name") == container]
    if not found:
        raise PreDeployError(f"pre-deploy template {where} has no container {container!r} (the app's container); "
                             "name the container that runs the app's image")
    found[0]["image"] = image
    assert isinstance(pod, dict)
    pod_meta = pod.setdefault("metadata", {})
    pod_labels = {k: v for k, v in (pod_meta.get("labels") or {}).items() if k not in _GENERATED_LABELS}
    pod_meta["labels"] = pod_labels
    job_labels = {k: v for k, v in {**(job_meta.get("labels") or {}), **labels}.items() if k != HOOK_LABEL}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(app, name, sha),
            "namespace": meta.get("namespace", ""),
            "labels": {**job_labels, APP_LABEL: app},
            "annotations": {**(job_meta.get("annotations") or {}), **annotations, ANN_TEMPLATE: ref},
        },
        "spec": job_spec,
    }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def job_state(obj: Mapping[str, Any]) -> JobState:
    """The state of a Job from its conditions (``Complete``/``SuccessCriteriaMet``, ``Failed``/``FailureTarget``)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if not isinstance(cond, dict) or cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return JobState(complete=True)
        if cond.get("type") in ("Failed", "FailureTarget"):
            reason = str(cond.get("reason") or "Failed")
            message = str(cond.get("message") or "")
            text = f"{reason}: {message}" if message else reason
            cut = text if len(text) <= MAX_REASON else text[:MAX_REASON] + "..."
            return JobState(failed=True, reason=printable(cut))
    return JobState()
