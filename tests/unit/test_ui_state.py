"""The state a dashboard cell shows for one env/app, from the plan and the newest audit record."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from deployctl.model.workload import Health, RolloutStatus
from deployctl.rules.plan import Action, Change
from deployctl.ui.data import LastDeploy, cell_state

A, B = "a" * 40, "b" * 40
T = datetime(2024, 6, 1, tzinfo=UTC)


def change(action: Action, health: Health | None = Health.HEALTHY, *, new: str = B, old: str | None = B,
           reason: str = "") -> Change:
    from deployctl.model.state import Target

    target = Target("staging", "web", new, f"r/web:{new}", "ns", "web", "environments/staging/web.deploy", 1, ())
    return Change("staging", "web", action, "ns", target, old_sha=old, reason=reason,
                  health=RolloutStatus(health, f"{health} message") if health else None)


def last(result: str, sha: str = B, error: str | None = None) -> LastDeploy:
    return LastDeploy(7, result, sha, T, "ci-bot", "ci", 3.0, error)


def test_in_sync_and_rolling_out() -> None:
    assert cell_state(change(Action.IN_SYNC), last("succeeded"))[0] == "in-sync"
    assert cell_state(change(Action.IN_SYNC, Health.PROGRESSING), last("started")) == (
        "progressing", "progressing message")


def test_a_failed_rollout_shows_failed_with_the_recorded_reason_until_it_is_healthy() -> None:
    failed = last("failed", error="rollout of deployment/web did not finish: 0/1 ready")
    assert cell_state(change(Action.IN_SYNC, Health.PROGRESSING), failed) == (
        "failed", "rollout of deployment/web did not finish: 0/1 ready")
    assert cell_state(change(Action.IN_SYNC, Health.FAILED), None) == ("failed", "failed message")
    assert cell_state(change(Action.IN_SYNC, Health.HEALTHY), failed)[0] == "in-sync"
    # a failure of an older SHA says nothing about the one desired now
    assert cell_state(change(Action.UPDATE, old=A), last("failed", sha=A))[0] == "pending"


def test_drift_missing_pending_and_being_applied() -> None:
    assert cell_state(change(Action.DRIFT, reason="live image x differs"), None) == ("drifted", "live image x differs")
    assert cell_state(change(Action.MISSING, None, reason="no workload"), None) == ("missing", "no workload")
    state, why = cell_state(change(Action.UPDATE, old=A), last("succeeded", sha=A))
    assert state == "pending" and A[:12] in why and B[:12] in why
    assert cell_state(change(Action.UPDATE, old=A), last("started"))[0] == "progressing"


def test_a_last_deploy_that_does_not_verify_says_nothing_about_the_state() -> None:
    forged = LastDeploy(9, "failed", B, T, "mallory", "ci", 1.0, "<b>it broke</b>",
                        unverified="attempt 9 was inserted with SQL")
    assert cell_state(change(Action.IN_SYNC, Health.PROGRESSING), forged) == ("progressing", "progressing message")
    assert cell_state(change(Action.UPDATE, old=A), LastDeploy(9, "started", B, T, "m", "ci", None, None,
                                                               unverified="edited"))[0] == "pending"
    assert forged.as_dict()["chain_verified"] is False and forged.as_dict()["chain_unverified_reason"].startswith("attempt 9")


def test_snapshot_orders_environments_for_promotion_and_filters_by_owner() -> None:
    from deployctl.model.config import load_config
    from deployctl.model.state import DesiredState, Target
    from deployctl.ui.data import build_snapshot

    config, _ = load_config(
        b"version: 1\napps:\n  web: {image: r/web, owner: '@front', commit_url: 'https://g/web/{short_sha}'}\n"
        b"  api: {image: r/api, owner: '@back'}\n"
        b"environments:\n  a-prod: {namespace: p, requires: [b-stage]}\n  b-stage: {namespace: s}\n")
    assert config is not None
    targets = tuple(Target(e, a, B, f"r/{a}:{B}", "p" if e == "a-prod" else "s", a,
                           f"environments/{e}/{a}.deploy", 1, ()) for e in ("a-prod", "b-stage") for a in ("api", "web"))
    desired = DesiredState(config, targets, (), "HEAD", "c" * 40)
    changes = [Change(t.env, t.app, Action.IN_SYNC, t.namespace, t, old_sha=B,
                      health=RolloutStatus(Health.HEALTHY, "ok")) for t in targets]
    snap = build_snapshot(desired, changes, refused={"a-prod": "namespace p is not allowed"}, last={}, now=T)
    assert snap.envs == ("b-stage", "a-prod")  # staging before the environment that requires it
    assert {c.state for c in snap.cells if c.env == "a-prod"} == {"refused"}
    web = snap.select(owner="@front")
    assert [(c.env, c.app) for c in web.cells] == [("a-prod", "web"), ("b-stage", "web")]
    assert web.cell("b-stage", "web").desired_url == f"https://g/web/{B[:12]}"  # type: ignore[union-attr]
    offline = build_snapshot(desired, None, refused={}, last={}, now=T, cluster_error="connection refused")
    assert {c.state for c in offline.cells} == {"unknown"}
    assert all(c.as_dict()["live_sha"] is None for c in offline.cells)


def test_an_update_reconcile_would_skip_says_why_as_the_plan_does() -> None:
    skip = "skipped: live deploy commit bbbbbbb is newer than aaaaaaa (to roll back, run deployctl rollback)"
    assert cell_state(change(Action.UPDATE, old=A, reason=skip), None) == ("pending", skip)


def test_a_cell_shows_the_verification_of_the_sha_it_runs_only() -> None:
    from deployctl.model.config import load_config
    from deployctl.model.state import DesiredState
    from deployctl.model.verification import Verification
    from deployctl.ui.data import build_snapshot
    from tests.fakes import deployment

    config, _ = load_config(b"version: 1\napps:\n  web: {image: r/web}\nenvironments:\n  staging: {namespace: ns}\n")
    assert config is not None
    running = replace(change(Action.IN_SYNC), workloads=(deployment("web", f"r/web:{B}", namespace="ns"),))
    desired = DesiredState(config, (running.target,), (), "HEAD", "c" * 40)

    def verification(sha: str) -> Verification:
        return Verification(attempt_id=7, env="staging", app="web", sha=sha, result="verification-failed",
                            reason="error-rate: x = 0.3, wanted result < 0.01", checks=(), started_at=T, finished_at=T)

    shown = build_snapshot(desired, [running], refused={}, last={}, now=T, verified={("staging", "web"): verification(B)})
    (cell,) = shown.cells
    assert (cell.as_dict()["verification"], cell.as_dict()["verification_reason"]) == (
        "verification-failed", "error-rate: x = 0.3, wanted result < 0.01")
    older = build_snapshot(desired, [running], refused={}, last={}, now=T, verified={("staging", "web"): verification(A)})
    assert older.cells[0].verification is None and older.cells[0].as_dict()["verification"] is None
