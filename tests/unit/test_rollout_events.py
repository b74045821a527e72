"""The rollout events of one attempt: only changes are noted, and their number is bounded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from deployctl.model.audit import MAX_EVENTS_PER_ATTEMPT, RolloutEventKind
from deployctl.model.workload import Workload
from deployctl.reconcile.rollout_events import RolloutLog, revision

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def deployment(rs: str, *, generation: int = 2, observed: int = 2, updated: int = 0, ready: int = 3) -> Workload:
    progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                   "message": f'ReplicaSet "{rs}" is progressing.'}
    return Workload(kind="Deployment", namespace="shop", name="web", app="web", images={"web": "img:2"},
                    annotations={}, generation=generation, observed_generation=observed, replicas=3,
                    status_replicas=3, updated_replicas=updated, ready_replicas=ready, available_replicas=ready,
                    conditions=(progressing,))


def kinds(log: RolloutLog) -> list[str]:
    return [str(kind) for _, kind, _ in log.events]


def test_a_rollout_notes_the_apply_the_new_replicaset_each_count_change_and_the_verdict() -> None:
    log = RolloutLog()
    log.applied(T0, [deployment("web-old", generation=3)], "img:2")
    log.seen(T0 + timedelta(seconds=1), [deployment("web-old", generation=3)])  # not yet observed: nothing
    log.seen(T0 + timedelta(seconds=2), [deployment("web-new", generation=3, observed=3, updated=1, ready=3)])
    log.seen(T0 + timedelta(seconds=3), [deployment("web-new", generation=3, observed=3, updated=1, ready=3)])
    log.seen(T0 + timedelta(seconds=4), [deployment("web-new", generation=3, observed=3, updated=3, ready=3)])
    log.verdict(T0 + timedelta(seconds=5), "succeeded", "rolled out")
    assert kinds(log) == ["applied", "revision", "progress", "progress", "verdict"]
    assert log.events[1][2] == "deployment/web: ReplicaSet web-new"
    assert log.events[3][2] == "deployment/web: 3/3 updated, 3/3 ready, 3/3 available"
    records = log.records(7)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5] and {r.attempt_id for r in records} == {7}
    assert records[0].at == T0 and records[-1].detail == "succeeded: rolled out"


def test_a_flapping_rollout_is_bounded_and_still_records_its_stall_and_verdict() -> None:
    log = RolloutLog()
    log.applied(T0, [deployment("web-old", generation=3)], "img:2")
    for i in range(500):
        log.seen(T0 + timedelta(seconds=i), [deployment("web-new", generation=3, observed=3, ready=i % 3)])
    log.stalled(T0 + timedelta(seconds=600), "ProgressDeadlineExceeded (pods: web-1: ImagePullBackOff)")
    log.verdict(T0 + timedelta(seconds=601), "failed", "rollout stalled")
    assert len(log.events) == MAX_EVENTS_PER_ATTEMPT
    assert kinds(log)[-2:] == [RolloutEventKind.STALLED, RolloutEventKind.VERDICT]
    assert "ImagePullBackOff" in log.events[-2][2]
    assert f"not recorded: at most {MAX_EVENTS_PER_ATTEMPT} per attempt" in log.events[-1][2]


def test_the_revision_of_a_statefulset_is_its_update_revision() -> None:
    sts = replace(deployment("x"), kind="StatefulSet", conditions=(), update_revision="db-7f9c")
    assert revision(sts) == "revision db-7f9c"
    assert revision(replace(deployment("x"), conditions=())) is None
