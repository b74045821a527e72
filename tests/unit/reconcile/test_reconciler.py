"""The reconciler's decisions, driven through its ports with an in-memory cluster (tests/fakes.py):
dependency order, a rollout timeout, a refusal, the audit store failing mid-run, app locks (taken only for
the apps written, waited for, lost before an apply)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deployctl.app.run import Callbacks, Run, run_once
from deployctl.errors import ClusterUnreachableError
from deployctl.model.problem import Problem
from deployctl.model.vocabulary import EnvStatus, ExitCode
from deployctl.model.workload import Workload
from deployctl.reconcile.options import ReconcileOptions, Timing
from deployctl.reconcile.outcome import Outcome, ReconcileResult
from deployctl.reconcile.reconciler import Prepared, Reconciler
from deployctl.reconcile.runstate import AppLocking
from tests.fakes import (
    IMAGE,
    FakeAudit,
    FakeCluster,
    FakeClusters,
    FakeLocks,
    deployment,
    desired_state,
    sha,
)

FAST = ReconcileOptions(timing=Timing(timeout=30, poll_interval=0.02))


def cluster_of(*apps: str, env: str = "staging") -> FakeCluster:
    """Every app of ``apps`` running commit 1."""
    return FakeCluster(*(deployment(a, f"{IMAGE}/{a}:{sha(1)}", namespace=f"ns-{env}") for a in apps))


def results(result: ReconcileResult) -> dict[str, str]:
    return {o.app: str(o.result) for o in result.outcomes}


def outcome(result: ReconcileResult, app: str) -> Outcome:
    (found,) = [o for o in result.outcomes if o.app == app]
    return found


def test_dependents_are_applied_only_after_their_dependencies_rolled_out():
    desired = desired_state({"db": (), "api": ("db",), "web": ("api",), "docs": ()})
    cluster = cluster_of("db", "api", "web", "docs")
    result = Reconciler(desired, FakeClusters(cluster), FAST).run()
    assert results(result) == {"db": "succeeded", "api": "succeeded", "web": "succeeded", "docs": "succeeded"}
    order = cluster.applied
    assert order.index("db") < order.index("api") < order.index("web")
    assert cluster.objects[("ns-staging", "Deployment", "web")].images["web"] == f"{IMAGE}/web:{sha(2)}"
    assert result.exit_code == 0


def test_a_failed_rollout_blocks_its_dependents_which_are_not_applied():
    desired = desired_state({"api": (), "web": ("api",)})
    cluster = cluster_of("api", "web")
    cluster.rollout["api"] = "failed"
    audit = FakeAudit()
    result = Reconciler(desired, FakeClusters(cluster), FAST, audit=audit).run()
    assert results(result) == {"api": "failed", "web": "blocked"}
    assert "ProgressDeadlineExceeded" in outcome(result, "api").message
    assert "CrashLoopBackOff" in outcome(result, "api").message  # what the pods say
    assert "dependency api failed" in outcome(result, "web").message
    assert cluster.applied == ["api"]
    assert audit.result_of("api") == "failed" and audit.result_of("web") == "blocked"
    assert result.exit_code == 1


def test_a_rollout_that_never_completes_times_out_and_is_recorded_as_failed():
    desired = desired_state({"api": ()})
    cluster = cluster_of("api")
    cluster.rollout["api"] = "stuck"
    audit = FakeAudit()
    result = Reconciler(desired, FakeClusters(cluster), ReconcileOptions(timing=Timing(timeout=0.3, poll_interval=0.02)),
                        audit=audit).run()
    found = outcome(result, "api")
    assert str(found.result) == "failed" and found.message.startswith("timed out after 0s: ")
    assert audit.result_of("api") == "failed"
    assert result.exit_code == 1


def test_a_refused_app_is_not_applied_its_refusal_is_recorded_and_its_dependents_blocked():
    desired = desired_state({"api": (), "web": ("api",), "docs": ()})
    cluster = cluster_of("api", "web", "docs")
    audit = FakeAudit()
    reason = "approval required: environments/staging/api.deploy: no reviewed merge commit"
    result = Reconciler(desired, FakeClusters(cluster), FAST, audit=audit,
                        prepared=Prepared(refusals={("staging", "api"): reason})).run()
    assert results(result) == {"api": "refused", "web": "blocked", "docs": "succeeded"}
    assert outcome(result, "api").message == reason
    assert cluster.applied == ["docs"]
    assert audit.result_of("api") == "refused"


def test_when_the_audit_store_fails_mid_run_nothing_more_is_applied_unrecorded():
    desired = desired_state({"api": (), "web": ("api",)})
    cluster = cluster_of("api", "web")
    audit = FakeAudit(fail_after=2)  # api's attempt and its outcome are written; then the store fails
    result = Reconciler(desired, FakeClusters(cluster), FAST, audit=audit).run()
    assert results(result) == {"api": "succeeded", "web": "failed"}
    assert outcome(result, "web").message.startswith(
        "not applied: the attempt could not be recorded: audit store: database is locked")
    assert cluster.applied == ["api"]  # web was never applied without its record


def test_an_outcome_whose_record_cannot_be_written_says_so():
    desired = desired_state({"api": ()})
    cluster = cluster_of("api")
    audit = FakeAudit(fail_after=1)  # the attempt is written, its outcome is not
    result = Reconciler(desired, FakeClusters(cluster), FAST, audit=audit).run()
    found = outcome(result, "api")
    assert str(found.result) == "succeeded"
    assert "(audit record not written: audit store: database is locked)" in found.message
    assert cluster.applied == ["api"]


def test_an_app_whose_lock_was_lost_before_its_apply_is_not_applied_and_the_others_go_on():
    desired = desired_state({"api": (), "web": ("api",), "docs": ()})
    cluster = cluster_of("api", "web", "docs")
    locks = FakeLocks()

    class Recorded(FakeAudit):
        def attempts_started(self, items, *, deploy_commit):  # type: ignore[no-untyped-def]
            for lock in locks.taken:
                if lock.app == "web":
                    lock.lost = True  # its renewals failed between its attempt and its apply
            return super().attempts_started(items, deploy_commit=deploy_commit)

    result = run_once(desired, Run(clusters=FakeClusters(cluster), locks=locks, options=FAST, repo_path=".",
                                   audit=Recorded()))
    assert "web" not in cluster.applied and {"api", "docs"} <= set(cluster.applied)
    assert results(result)["web"] == "failed"
    assert "the lock of staging/web could not be renewed in time; not applied" in outcome(result, "web").message
    assert all(lock.released for lock in locks.taken)
    assert result.exit_code != 0


def test_run_once_takes_the_lock_of_each_app_it_writes_and_releases_it():
    desired = desired_state({"api": (), "web": ()})
    cluster = cluster_of("api", "web")
    locks = FakeLocks()
    audit = FakeAudit()
    result = run_once(desired, Run(clusters=FakeClusters(cluster), locks=locks, options=FAST, repo_path=".",
                                   audit=audit))
    assert results(result) == {"api": "succeeded", "web": "succeeded"}
    assert sorted((lock.namespace, lock.app, lock.released) for lock in locks.taken) == [
        ("ns-staging", "api", True), ("ns-staging", "web", True)]
    assert audit.result_of("api") == "succeeded"


def test_a_run_with_nothing_to_change_takes_no_lock():
    desired = desired_state({"api": (), "web": ()}, new=1)
    cluster = cluster_of("api", "web")
    locks = FakeLocks()
    result = run_once(desired, Run(clusters=FakeClusters(cluster), locks=locks, options=FAST, repo_path="."))
    assert results(result) == {"api": "in-sync", "web": "in-sync"}
    assert locks.taken == []


def test_an_app_held_by_another_run_waits_gives_up_at_the_lock_timeout_and_the_others_are_written():
    desired = desired_state({"api": (), "web": ()})
    cluster = cluster_of("api", "web")
    locks = FakeLocks(busy={"api": "ci-job-4710"})
    waits: list[str] = []
    options = replace(FAST, locking=replace(FAST.locking, lease=1.0, timeout=0.5))
    result = run_once(desired, Run(clusters=FakeClusters(cluster), locks=locks, options=options, repo_path=".",
                                   callbacks=Callbacks(on_wait=waits.append)))
    assert cluster.applied == ["web"]
    assert results(result) == {"api": "failed", "web": "succeeded"}
    assert waits == ["waiting for staging/api: held by ci-job-4710 since 10:00:00"]
    assert outcome(result, "api").message == (
        "lock lease ns-staging/deployctl-lock-api is held by ci-job-4710 since 10:00:00; gave up after 0s "
        "(--lock-timeout); not applied")


def test_an_environment_with_config_errors_is_a_row_an_invalid_environment_and_exit_2():
    """Issue 22 item 7: production's deployctl.yaml entry is invalid; staging is applied, production is not
    silently left out."""
    desired = desired_state({"api": ()})
    desired = replace(desired, problems=(
        Problem("deployctl.yaml", 11, "environments.production.require_approval must be true or false",
                env="production"),
        Problem("environments/production/api.deploy", 1, "not deployable: environment 'production' has errors "
                "in deployctl.yaml; fix those first", env="production", app="api"),
    ))
    cluster = cluster_of("api")
    locks = FakeLocks()
    result = run_once(desired, Run(clusters=FakeClusters(cluster), locks=locks, options=FAST, repo_path="."))
    assert {(o.env, o.app): str(o.result) for o in result.outcomes} == {
        ("production", "api"): "invalid", ("staging", "api"): "succeeded"}
    assert {e.env: e.status for e in result.environments} == {"production": EnvStatus.INVALID,
                                                               "staging": EnvStatus.OK}
    assert [p.line for p in result.problems] == [11]
    assert result.exit_code == ExitCode.INVALID
    assert cluster.applied == ["api"]
    assert [(lock.namespace, lock.app) for lock in locks.taken] == [("ns-staging", "api")]  # only what is written


def test_a_run_holds_no_more_app_locks_at_once_than_its_renewer_keeps_alive():
    # Each app's lock is held through its rollout wait; a run writing thousands of apps held them all and
    # their renewals fell behind (bench/shard.py at 10,000 apps): the others wait to start instead.
    apps = [f"app{i}" for i in range(10)]
    desired = desired_state({a: () for a in apps})
    cluster = cluster_of(*apps)
    locks = FakeLocks()
    held_at_apply: list[int] = []
    cluster.after_apply = lambda _w: held_at_apply.append(sum(1 for lock in locks.taken if lock.held()))
    options = replace(FAST, locking=replace(FAST.locking, max_held=3))
    result = run_once(desired, Run(clusters=FakeClusters(cluster), locks=locks, options=options, repo_path="."))
    assert results(result) == {a: "succeeded" for a in apps}
    assert len(held_at_apply) == 10
    assert max(held_at_apply) == 3  # three at a time: never more, and the room is used
    assert all(lock.released for lock in locks.taken)


class _LosesTheApi(FakeCluster):
    """A cluster whose API stops answering LISTs once ``cut`` is set (as a 2-core API server under 10,000
    rollouts did: a LIST of 2,500 Deployments timed out)."""

    cut = False

    def list_kind(self, namespace: str, kind: str, *, count: bool = True) -> list[Workload]:
        if self.cut and count:
            raise ClusterUnreachableError(f"cannot reach the Kubernetes API (list {kind} in {namespace}): timed out")
        return super().list_kind(namespace, kind, count=count)


def test_an_api_lost_between_two_waves_leaves_no_attempt_on_record_without_its_outcome():
    # api is rolling out (its attempt on record) when web, whose lock another run held until then, re-reads
    # its workloads after taking the lock and the API is gone. api's attempt was left open, for the next run
    # to close as "the process running this attempt stopped" (it had not: 644 rows so at 10,000 apps)
    desired = desired_state({"api": (), "web": ()})
    cluster = _LosesTheApi(*cluster_of("api", "web").objects.values())
    cluster.rollout["api"] = "stuck"
    locks = FakeLocks(busy={"web": "ci-job-4711"})

    def after_apply(_w: Workload) -> None:
        cluster.cut = True
        locks.busy.clear()

    cluster.after_apply = after_apply
    audit = FakeAudit()
    locking = AppLocking(locks=locks, identity="ci", lease=0.3, max_held=256, timeout=30)
    with pytest.raises(ClusterUnreachableError):
        Reconciler(desired, FakeClusters(cluster), FAST, audit=audit, locking=locking).run()
    assert [app for _, _, app in audit.started] == ["api"]
    assert audit.finished == {1: ("failed", "the Kubernetes API became unreachable")}
