"""A target skipped for invalid input is never silently left out: it is selected, it is a row of the
diff, and errors no row reports make the run's input invalid. Pure: desired states built from bytes."""

from __future__ import annotations

import hashlib

from deployctl.model.vocabulary import DiffStatus, EnvStatus, ExitCode, Result
from deployctl.reconcile.outcome import EnvironmentOutcome, Outcome, ReconcileResult
from deployctl.rules.diff import diff_states
from deployctl.rules.plan import Action, Plan, make_plan
from deployctl.rules.validation import build_desired_state

CONFIG = ("version: 1\napps:\n  api:\n    image: registry.example.com/shop/api\n    pin: tag\n"
          "environments:\n  staging:\n    namespace: shop-staging\n  production:\n    namespace: shop\n")


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def state(config: str, files: dict[str, str]):
    return build_desired_state(config.encode(), {k: v.encode() for k, v in files.items()}, ref="HEAD", commit=None)


BOTH = {"environments/staging/api.deploy": sha("b") + "\n", "environments/production/api.deploy": sha("b") + "\n"}
BROKEN_PRODUCTION = CONFIG + "    require_approval: maybe\n"


def test_an_environment_with_config_errors_is_still_selected_and_planned_as_invalid() -> None:
    desired = state(BROKEN_PRODUCTION, BOTH)
    assert desired.named_environments() == ("production", "staging")
    plan = make_plan(desired, {}, envs=desired.named_environments())
    assert {(c.env, c.app): c.action for c in plan.changes} == {
        ("production", "api"): Action.INVALID, ("staging", "api"): Action.MISSING}
    assert [p.message for p in desired.unrowed_errors()] == [
        "environments.production.require_approval must be true, false or forge (approving pull-request reviews)"]
    assert desired.unrowed_errors(envs=("staging",)) == ()


def test_an_unknown_environment_folder_is_an_error_no_row_reports() -> None:
    desired = state(CONFIG, {**BOTH, "environments/qa/api.deploy": sha("q") + "\n"})
    [problem] = desired.unrowed_errors()
    assert problem.env == "qa" and "has no entry under environments" in problem.message


def test_the_diff_shows_an_invalid_head_target_as_invalid() -> None:
    base = state(CONFIG, {"environments/staging/api.deploy": sha("a") + "\n"})
    head = state(BROKEN_PRODUCTION, BOTH)
    rows = {(t.env, t.app): (t.status, t.path) for t in diff_states(base, head).targets}
    assert rows == {("production", "api"): (DiffStatus.INVALID, "environments/production/api.deploy"),
                    ("staging", "api"): (DiffStatus.CHANGED, "environments/staging/api.deploy")}


def _outcome(result: Result) -> Outcome:
    return Outcome(env="staging", app="api", action=Action.UPDATE, result=result)


def test_the_exit_code_is_the_highest_of_outcomes_environments_and_invalid_input() -> None:
    plan = Plan(changes=())
    assert ReconcileResult(plan, (_outcome(Result.SUCCEEDED),)).exit_code == ExitCode.OK
    assert ReconcileResult(plan, (_outcome(Result.SKIPPED),)).exit_code == ExitCode.OK
    assert ReconcileResult(plan, (_outcome(Result.FAILED),)).exit_code == ExitCode.FAILED
    assert ReconcileResult(plan, (_outcome(Result.FAILED), _outcome(Result.INVALID))).exit_code == ExitCode.INVALID
    invalid_env = (EnvironmentOutcome("production", EnvStatus.INVALID),)
    assert ReconcileResult(plan, (_outcome(Result.SUCCEEDED),), environments=invalid_env).exit_code == ExitCode.INVALID
    problems = state(BROKEN_PRODUCTION, BOTH).unrowed_errors()
    assert ReconcileResult(plan, (), problems=problems).exit_code == ExitCode.INVALID
    unreachable = (EnvironmentOutcome("production", EnvStatus.UNREACHABLE),)
    assert ReconcileResult(plan, (), environments=unreachable, problems=problems).exit_code == ExitCode.UNREACHABLE


def test_tally_counts_results_per_environment() -> None:
    result = ReconcileResult(Plan(changes=()), (
        _outcome(Result.SUCCEEDED), _outcome(Result.SUCCEEDED),
        Outcome(env="production", app="api", action=Action.INVALID, result=Result.INVALID)))
    assert result.tally() == {Result.SUCCEEDED: 2, Result.INVALID: 1}
    assert result.tally("production") == {Result.INVALID: 1}


def test_result_predicates() -> None:
    assert [r for r in Result if r.blocks_dependents] == [
        Result.FAILED, Result.BLOCKED, Result.INTERRUPTED, Result.REFUSED, Result.SUSPENDED, Result.RESUMED,
        Result.MISSING, Result.INVALID]
    assert Result.APPLIED.recorded_as is Result.SUCCEEDED
    assert Result.FAILED.recorded_as is Result.FAILED
    assert {r for r in Result if r.ok} == {Result.SUCCEEDED, Result.DRIFT_CORRECTED, Result.APPLIED, Result.IN_SYNC,
                                           Result.SKIPPED, Result.SUSPENDED}
