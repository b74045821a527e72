"""``plan`` (CLI) and the dashboard share one observed plan, ordering verdicts included."""

from __future__ import annotations

from dataclasses import replace

from deployctl.app.status import observed_plan
from deployctl.model.workload import ANN_DEPLOY_COMMIT
from deployctl.rules.ordering import Relation
from deployctl.rules.plan import Action
from tests.fakes import IMAGE, FakeCluster, FakeClusters, deployment, desired_state, sha

LIVE_COMMIT = "e" * 40


def test_the_observed_plan_says_which_updates_reconcile_would_skip() -> None:
    desired = replace(desired_state({"api": ()}), commit="d" * 40)
    live = deployment("api", f"{IMAGE}/api:{sha(1)}", namespace="ns-staging")
    cluster = FakeCluster(replace(live, annotations={ANN_DEPLOY_COMMIT: LIVE_COMMIT}))
    plan, refused = observed_plan(desired, FakeClusters(cluster), relation=lambda new, old: Relation.LIVE_NEWER)
    (change,) = plan.changes
    assert change.action is Action.UPDATE and refused == {}
    assert change.reason.startswith(f"skipped: live deploy commit {LIVE_COMMIT[:7]} is newer than ddddddd")
    unchecked, _ = observed_plan(desired, FakeClusters(cluster), relation=None)
    assert unchecked.changes[0].reason == ""
