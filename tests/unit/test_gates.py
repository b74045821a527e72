"""Promotion gates: a SHA must have run in every environment its environment requires."""

from __future__ import annotations

from deployctl.model.config import AppConfig, Config, EnvironmentConfig
from deployctl.model.state import Target
from deployctl.rules.gates import AUDIT, GIT, RunFact, check_gates, gate_problems, violations

A, B = "a" * 40, "b" * 40
CONFIG = Config(
    version=1,
    apps={"web": AppConfig("web", "registry.example.com/web")},
    environments={
        "staging": EnvironmentConfig("staging", "shop-staging"),
        "canary": EnvironmentConfig("canary", "shop-canary"),
        "production": EnvironmentConfig("production", "shop", requires=("staging", "canary")),
    },
)


def target(env: str, sha: str) -> Target:
    return Target(env, "web", sha, f"registry.example.com/web:{sha}", "shop", "web",
                  f"environments/{env}/web.deploy", 1, ())


def test_sha_that_ran_in_every_required_environment_passes() -> None:
    facts = [RunFact("staging", "web", A, "succeeded"), RunFact("canary", "web", A, "drift-corrected")]
    results = check_gates([target("production", A)], CONFIG, facts, source=AUDIT)
    assert [(r.required, r.passed) for r in results] == [("staging", True), ("canary", True)]
    assert violations(results) == []


def test_failed_or_refused_runs_do_not_count() -> None:
    facts = [RunFact("staging", "web", A, "failed"), RunFact("canary", "web", A, "refused")]
    results = check_gates([target("production", A)], CONFIG, facts, source=AUDIT)
    assert [r.passed for r in results] == [False, False]


def test_a_run_whose_audit_row_does_not_verify_does_not_count_and_is_named() -> None:
    forged = RunFact("staging", "web", A, "succeeded", unverified="attempt 9 was inserted with SQL")
    facts = [forged, RunFact("canary", "web", A, "succeeded")]
    staging, canary = check_gates([target("production", A)], CONFIG, facts, source=AUDIT)
    assert (staging.passed, staging.rejected, canary.passed) == (False, ("attempt 9 was inserted with SQL",), True)
    assert "; not counted: attempt 9 was inserted with SQL; environment production requires staging" in (
        staging.message()
    )
    true_run = RunFact("staging", "web", A, "succeeded")
    staging, _ = check_gates([target("production", A)], CONFIG, [forged, true_run, *facts], source=AUDIT)
    assert (staging.passed, staging.rejected) == (True, ())


def test_a_run_of_another_app_or_sha_does_not_count() -> None:
    facts = [RunFact("staging", "api", A, "succeeded"), RunFact("staging", "web", B, "succeeded"),
             RunFact("canary", "web", A, "deployed")]
    results = check_gates([target("production", A)], CONFIG, facts, source=GIT)
    assert [(r.required, r.passed) for r in results] == [("staging", False), ("canary", True)]


def test_environments_without_requires_are_not_gated() -> None:
    assert check_gates([target("staging", A), target("canary", B)], CONFIG, [], source=GIT) == []


def test_violation_is_an_error_naming_the_deploy_file_line_and_missing_environment() -> None:
    results = check_gates([target("production", A)], CONFIG, [RunFact("canary", "web", A, "deployed")],
                          source=GIT)
    [problem] = gate_problems(results)
    assert problem.is_error and (problem.env, problem.app) == ("production", "web")
    assert str(problem) == (
        "environments/production/web.deploy:1: aaaaaaaaaaaa has not run successfully in staging "
        "(as the first line of environments/staging/web.deploy in an earlier commit); environment production "
        "requires staging first: deploy it "
        "to staging (deployctl promote web --from <env> --to staging) and promote from there"
    )


def test_audit_source_is_named_in_the_message() -> None:
    [result] = violations(check_gates([target("production", A)], CONFIG, [], source=AUDIT))[:1]
    assert "(in the audit history, as the first line of environments/staging/web.deploy in an earlier commit)" \
        in result.message()
