"""Rollout verdicts of every managed kind, from API JSON (pure): kubectl's rules, and failing at
once where waiting cannot help (paused, ProgressDeadlineExceeded, OnDelete)."""

from __future__ import annotations

from typing import Any

from deployctl.model.workload import KINDS, Health, Workload, drifted, rollout_status


def obj(kind: str, *, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
        generation: int = 2) -> Workload:
    meta = {"name": "agent", "namespace": "ns", "generation": generation, "labels": {"deployctl.dev/app": "agent"}}
    return Workload.from_object({"metadata": meta, "spec": spec or {}, "status": status or {}}, kind)


def deployment(*, paused: bool = False, updated: int = 3, available: int = 3, observed: int = 2,
               conditions: list[dict[str, str]] | None = None) -> Workload:
    return obj("Deployment", spec={"replicas": 3, "paused": paused},
               status={"observedGeneration": observed, "replicas": 3, "updatedReplicas": updated,
                       "availableReplicas": available, "readyReplicas": available, "conditions": conditions or []})


def daemonset(*, desired: int = 3, updated: int = 3, available: int = 3, observed: int = 2,
              strategy: str = "RollingUpdate") -> Workload:
    return obj("DaemonSet", spec={"updateStrategy": {"type": strategy},
                                  "template": {"spec": {"containers": [{"name": "agent", "image": "a:1"}]}}},
               status={"observedGeneration": observed, "desiredNumberScheduled": desired,
                       "currentNumberScheduled": desired, "updatedNumberScheduled": updated,
                       "numberAvailable": available, "numberReady": available})


def test_the_managed_kinds_include_daemonsets_and_cronjobs():
    assert KINDS == ("Deployment", "StatefulSet", "DaemonSet", "CronJob")


def test_a_paused_deployment_mid_rollout_fails_at_once_naming_the_pause():
    status = rollout_status(deployment(paused=True, updated=1))
    assert status.health is Health.FAILED and "paused" in status.message and "rollout resume" in status.message


def test_a_paused_deployment_whose_new_spec_is_not_yet_observed_fails_at_once():
    assert rollout_status(deployment(paused=True, observed=1)).health is Health.FAILED


def test_a_paused_deployment_already_rolled_out_is_healthy():
    assert rollout_status(deployment(paused=True)).health is Health.HEALTHY


def test_progress_deadline_exceeded_fails_with_the_reason():
    cond = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "agent-1" has timed out progressing.'}]
    status = rollout_status(deployment(updated=1, conditions=cond))
    assert status.health is Health.FAILED and status.message.startswith("ProgressDeadlineExceeded")


def test_daemonset_verdicts_follow_kubectl_rollout_status():
    assert rollout_status(daemonset(observed=1)).health is Health.PROGRESSING  # spec not observed yet
    updating = rollout_status(daemonset(updated=1, available=3))
    assert updating.health is Health.PROGRESSING and "1 out of 3 new pods updated" in updating.message
    unavailable = rollout_status(daemonset(updated=3, available=2))
    assert unavailable.health is Health.PROGRESSING and "2 of 3 updated pods available" in unavailable.message
    assert rollout_status(daemonset()).health is Health.HEALTHY
    assert rollout_status(daemonset(desired=0, updated=0, available=0)).health is Health.HEALTHY  # no nodes


def test_daemonset_counts_come_from_its_scheduled_pods():
    w = daemonset(desired=5, updated=4, available=3)
    assert (w.replicas, w.updated_replicas, w.available_replicas, w.images) == (5, 4, 3, {"agent": "a:1"})


def test_an_ondelete_daemonset_with_old_pods_fails_at_once_and_one_rolled_out_is_healthy():
    stuck = rollout_status(daemonset(updated=0, strategy="OnDelete"))
    assert stuck.health is Health.FAILED and "OnDelete" in stuck.message
    assert rollout_status(daemonset(strategy="OnDelete")).health is Health.HEALTHY


def test_an_ondelete_statefulset_with_a_new_revision_fails_at_once():
    sts = obj("StatefulSet", spec={"replicas": 2, "updateStrategy": {"type": "OnDelete"}},
              status={"observedGeneration": 2, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "b"})
    status = rollout_status(sts)
    assert status.health is Health.FAILED and "OnDelete" in status.message
    done = obj("StatefulSet", spec={"replicas": 2, "updateStrategy": {"type": "OnDelete"}},
               status={"observedGeneration": 2, "readyReplicas": 2, "currentRevision": "b", "updateRevision": "b"})
    assert rollout_status(done).health is Health.HEALTHY


def test_a_rolling_statefulset_waits_for_the_new_revision():
    sts = obj("StatefulSet", spec={"replicas": 2, "updateStrategy": {"type": "RollingUpdate"}},
              status={"observedGeneration": 2, "readyReplicas": 2, "currentRevision": "a", "updateRevision": "b"})
    assert rollout_status(sts).health is Health.PROGRESSING


def test_a_cronjob_takes_its_image_from_the_job_template_and_has_no_rollout():
    cj = obj("CronJob", spec={"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "report", "image": "reg/report:1"}]}}}}})
    assert cj.images == {"report": "reg/report:1"}
    assert rollout_status(cj).health is Health.HEALTHY


def test_a_workload_is_drifted_when_no_container_runs_the_image_deployctl_applied():
    spec = {"template": {"spec": {"containers": [{"name": "api", "image": "reg/api:hand"}]}}}
    meta_ann = {"deployctl.dev/image": "reg/api:applied"}
    w = Workload.from_object({"metadata": {"name": "api", "annotations": meta_ann}, "spec": spec}, "Deployment")
    assert drifted(w)
    same = Workload.from_object({"metadata": {"name": "api", "annotations": {"deployctl.dev/image": "reg/api:hand"}},
                                 "spec": spec}, "Deployment")
    never = Workload.from_object({"metadata": {"name": "api"}, "spec": spec}, "Deployment")
    assert not drifted(same) and not drifted(never)  # in sync; or never applied by deployctl
