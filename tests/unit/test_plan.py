"""The pure planner and rollout health: plain values in, decisions out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deployctl.edges.registry.client import Resolution
from deployctl.model.config import AppConfig, Config, EnvironmentConfig
from deployctl.model.problem import Problem
from deployctl.model.state import DesiredState, Target
from deployctl.model.workload import ANN_COMMIT, ANN_IMAGE, Health, Workload, combined_status, rollout_status
from deployctl.reconcile.artifacts import DigestEvidence, known_pins, pin_decisions
from deployctl.rules.plan import Action, dependency_order, make_plan

SHA1 = "1" * 40
SHA2 = "2" * 40
IMG = "registry.example.com/shop"


def target(app: str, sha: str = SHA2, deps: tuple[str, ...] = (), env: str = "staging") -> Target:
    return Target(env=env, app=app, sha=sha, image=f"{IMG}/{app}:{sha}", namespace=f"ns-{env}", container=app,
                  path=f"environments/{env}/{app}.deploy", line=1, depends_on=deps)


def workload(app: str, image: str, *, applied: str | None = None, commit: str | None = None, env: str = "staging",
             **status: int) -> Workload:
    ann = {}
    if applied:
        ann[ANN_IMAGE] = applied
    if commit:
        ann[ANN_COMMIT] = commit
    defaults = dict(generation=2, observed_generation=2, replicas=1, status_replicas=1, updated_replicas=1,
                    ready_replicas=1, available_replicas=1)
    defaults.update(status)
    return Workload(kind="Deployment", namespace=f"ns-{env}", name=app, app=app, images={app: image},
                    annotations=ann, **defaults)


def desired(*targets: Target, problems: tuple[Problem, ...] = ()) -> DesiredState:
    config = Config(version=1, apps={t.app: AppConfig(name=t.app, image=f"{IMG}/{t.app}") for t in targets},
                    environments={"staging": EnvironmentConfig(name="staging", namespace="ns-staging")})
    return DesiredState(config=config, targets=tuple(sorted(targets, key=lambda t: t.key)), problems=problems,
                        ref="HEAD", commit="c" * 40)


def test_live_image_equal_to_desired_is_in_sync_and_carries_the_old_sha():
    t = target("api")
    plan = make_plan(desired(t), {"ns-staging": [workload("api", t.image, applied=t.image, commit=t.sha)]})
    change = plan.get("staging", "api")
    assert change.action is Action.IN_SYNC and change.old_sha == t.sha and not change.writes


def test_a_new_sha_is_an_update_from_the_sha_deployctl_last_applied():
    old = target("api", SHA1)
    t = target("api", SHA2)
    plan = make_plan(desired(t), {"ns-staging": [workload("api", old.image, applied=old.image, commit=SHA1)]})
    change = plan.get("staging", "api")
    assert change.action is Action.UPDATE and (change.old_sha, change.new_sha) == (SHA1, SHA2)


def test_an_image_changed_behind_deployctls_back_is_drift():
    t = target("api")
    live = workload("api", f"{IMG}/api:hotfix", applied=t.image, commit=t.sha)
    change = make_plan(desired(t), {"ns-staging": [live]}).get("staging", "api")
    assert change.action is Action.DRIFT and "hotfix" in change.reason


def test_no_labelled_workload_is_missing_and_says_how_to_label_one():
    change = make_plan(desired(target("api")), {"ns-staging": []}).get("staging", "api")
    assert change.action is Action.MISSING and "deployctl.dev/app=api" in change.reason


def test_a_workload_without_the_container_is_invalid_not_guessed():
    t = target("api")
    w = Workload(kind="Deployment", namespace="ns-staging", name="api", app="api", images={"server": "x"},
                 annotations={}, generation=1, observed_generation=1, replicas=1, status_replicas=1,
                 updated_replicas=1, ready_replicas=1, available_replicas=1)
    change = make_plan(desired(t), {"ns-staging": [w]}).get("staging", "api")
    assert change.action is Action.INVALID and "has no container 'api'" in change.reason


def test_dependents_of_a_missing_dependency_are_blocked_and_independent_apps_are_not():
    api, web, worker = target("api"), target("web", deps=("api",)), target("worker")
    live = {"ns-staging": [workload("web", f"{IMG}/web:old"), workload("worker", f"{IMG}/worker:old")]}
    plan = make_plan(desired(api, web, worker), live)
    assert plan.get("staging", "api").action is Action.MISSING
    assert plan.get("staging", "web").action is Action.BLOCKED
    assert "dependency api is missing" in plan.get("staging", "web").reason
    assert plan.get("staging", "worker").action is Action.UPDATE


def test_invalid_targets_appear_in_the_plan_with_their_problems():
    problem = Problem(path="environments/staging/api.deploy", line=1, message="'abc' is not a full SHA",
                      env="staging", app="api")
    plan = make_plan(desired(target("web"), problems=(problem,)), {"ns-staging": []})
    change = plan.get("staging", "api")
    assert change.action is Action.INVALID and "environments/staging/api.deploy:1" in change.reason


def test_env_and_app_selection():
    a, b = target("api"), target("web", env="production")
    plan = make_plan(desired(a, b), {}, envs=["staging"])
    assert [c.key for c in plan.changes] == [("staging", "api")]


@given(st.dictionaries(st.sampled_from("abcdef"), st.lists(st.sampled_from("abcdef"), max_size=3), max_size=6))
def test_dependency_order_puts_every_acyclic_dependency_first(graph):
    apps = {a: tuple(d for d in deps if d != a) for a, deps in graph.items()}
    order = dependency_order(apps)
    assert sorted(order) == sorted(apps)
    position = {a: i for i, a in enumerate(order)}

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(d == goal or (d in apps and d not in seen and reaches(d, goal, seen | {d})) for d in apps[start])

    for app, deps in apps.items():
        for dep in deps:
            if dep in apps and not reaches(dep, app):  # not part of a cycle
                assert position[dep] < position[app]


def test_rollout_status_follows_kubectl_rollout_status():
    assert rollout_status(workload("a", "x", generation=3, observed_generation=2)).health is Health.PROGRESSING
    assert rollout_status(workload("a", "x", replicas=2, updated_replicas=1)).health is Health.PROGRESSING
    assert rollout_status(workload("a", "x", status_replicas=2)).health is Health.PROGRESSING  # old replica left
    assert rollout_status(workload("a", "x", available_replicas=0)).health is Health.PROGRESSING
    assert rollout_status(workload("a", "x")).health is Health.HEALTHY
    failed = Workload(**{**workload("a", "x").__dict__, "conditions": (
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "a-1" has timed out progressing.'},)})
    status = rollout_status(failed)
    assert status.health is Health.FAILED and status.message.startswith("ProgressDeadlineExceeded")
    assert combined_status([workload("a", "x"), failed]).health is Health.FAILED


def test_pins_reuse_the_applied_digest_and_refuse_missing_or_retagged_images():
    t = target("api")
    digest = "sha256:" + "a" * 64
    pinned = f"{t.image}@{digest}"
    assert known_pins([t], None, {("ns-staging", "api"): {pinned}}) == {t.key: pinned}
    assert known_pins([t], None, {("ns-staging", "api"): {f"{IMG}/api:other@{digest}"}}) == {}

    found = Resolution(reference=t.image, status="found", digest=digest, media_type=None, message=None)
    missing = Resolution(reference=t.image, status="missing", digest=None, media_type=None,
                         message=f"no image {t.image} — did its build finish?")
    config = Config(version=1, apps={"api": AppConfig(name="api", image=f"{IMG}/api")},
                    environments={"staging": EnvironmentConfig(name="staging", namespace="ns-staging"),
                                  "production": EnvironmentConfig(name="production", namespace="ns-production",
                                                                  requires=("staging",))})
    ok = pin_decisions([t], config, {t.image: found})
    assert ok.images == {t.key: pinned} and not ok.refusals
    refused = pin_decisions([t], config, {t.image: missing})
    assert refused.refusals[t.key].startswith("environments/staging/api.deploy:1: no image")

    prod = target("api", env="production")
    other = "sha256:" + "b" * 64
    retagged = pin_decisions([prod], config, {prod.image: found}, tested_digest=lambda env, app, sha: DigestEvidence(other))
    assert "the artifact changed after it was tested" in retagged.refusals[prod.key]
    allowed = pin_decisions([prod], config, {prod.image: found}, tested_digest=lambda *a: DigestEvidence(other), allow_retagged=True)
    assert not allowed.refusals and allowed.images[prod.key].endswith(digest)

    forged = "attempt 9's claim that sha256:bbbb… ran in staging (attempt 9 was inserted with SQL)"
    named = pin_decisions([prod], config, {prod.image: found},
                          tested_digest=lambda *a: DigestEvidence(other, rejected=(forged,)))
    assert named.refusals[prod.key].endswith(f"--allow-retagged to accept the new one; not counted: {forged}")
    believed = pin_decisions([prod], config, {prod.image: found},
                             tested_digest=lambda *a: DigestEvidence(digest, rejected=(forged,)))
    assert not believed.refusals and believed.images[prod.key].endswith(digest)


def test_a_digest_only_unverified_rows_claim_refuses_the_target_naming_them() -> None:
    """Fail closed: when every row naming a digest fails to verify, nothing says what was tested."""
    digest = "sha256:" + "a" * 64
    prod = target("api", env="production")
    found = Resolution(reference=prod.image, status="found", digest=digest, media_type=None, message=None)
    config = Config(version=1, apps={"api": AppConfig(name="api", image=f"{IMG}/api")},
                    environments={"staging": EnvironmentConfig(name="staging", namespace="ns-staging"),
                                  "production": EnvironmentConfig(name="production", namespace="ns-production",
                                                                  requires=("staging",))})
    forged = "attempt 9's claim that sha256:aaaa… ran in staging (attempt 9 was inserted with SQL)"
    refused = pin_decisions([prod], config, {prod.image: found},
                            tested_digest=lambda *a: DigestEvidence(None, rejected=(forged,)))
    assert refused.refusals[prod.key] == (
        f"environments/production/api.deploy:1: no audit row that verifies says which digest ran in staging; "
        f"not counted: {forged}. Run `deployctl audit verify` and look into the store, or pass --allow-retagged "
        "to deploy without the check"
    )
    unknown = pin_decisions([prod], config, {prod.image: found}, tested_digest=lambda *a: DigestEvidence())
    assert not unknown.refusals


def test_a_suspended_workload_gets_the_suspended_action_with_who_and_why_and_no_write():
    from dataclasses import replace

    from deployctl.model.workload import ANN_SUSPENDED, ANN_SUSPENDED_BY, ANN_SUSPENDED_REASON

    old = target("api", SHA1)
    t = target("api", SHA2)
    live = workload("api", old.image, applied=old.image, commit=SHA1)
    held = replace(live, annotations={**live.annotations, ANN_SUSPENDED: "true", ANN_SUSPENDED_BY: "ana@box",
                                      ANN_SUSPENDED_REASON: "INC-42"})
    change = make_plan(desired(t), {"ns-staging": [held]}).get("staging", "api")
    assert change.action is Action.SUSPENDED and not change.writes
    assert change.reason == "suspended by ana@box: INC-42"
    assert make_plan(desired(t), {"ns-staging": [live]}).get("staging", "api").action is Action.UPDATE
