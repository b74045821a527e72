"""Verification, pure parts: the success-condition grammar, the checks in deployctl.yaml, measurements,
verdicts, the roll-forward target and the require_verified gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.model.config import load_config
from deployctl.model.state import Target
from deployctl.model.verification import (
    QUERY,
    Check,
    ConditionError,
    Verification,
    VerifyResult,
    parse_condition,
)
from deployctl.rules import verification as rules
from deployctl.rules.gates import RunFact, check_gates

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("text", "value", "holds"), [
    ("result < 0.01", 0.009, True),
    ("result < 0.01", 0.01, False),
    ("result <= 0.01", 0.01, True),
    ("result >= 0.99 and result <= 1", 0.995, True),
    ("result >= 0.99 and result <= 1", 1.5, False),
    ("result < 1 or result > 10", 11, True),
    ("result < 1 or result > 10", 5, False),
    ("RESULT != 0", 2, True),
    ("result == 1e-3", 0.001, True),
    ("result < 5", float("nan"), False),
])
def test_conditions_read_comparisons_joined_by_and_or(text: str, value: float, holds: bool) -> None:
    assert parse_condition(text).holds(value) is holds


@pytest.mark.parametrize("text", [
    "__import__('os').system('id')", "result < ", "result < 1 and", "0.01 > result", "result < nan",
    "result < 1 xor result > 2", "value < 1", "result <> 1", "", "result < 1e999", "result" * 50,
])
def test_anything_outside_the_grammar_is_refused_never_evaluated(text: str) -> None:
    with pytest.raises(ConditionError):
        parse_condition(text)


@given(st.text(max_size=60))
def test_any_text_either_parses_or_is_refused_with_a_condition_error(text: str) -> None:
    try:
        parse_condition(text)
    except ConditionError:
        pass


CONFIG = """version: 1
apps:
  web:
    image: reg.example.com/web
    verify:
{checks}
environments:
  staging:
    namespace: s
  production:
    namespace: p
    requires: [staging]
    require_verified: true
    on_verification_failure: freeze
"""


def problems(checks: str) -> list[str]:
    _, found = load_config(CONFIG.format(checks=checks).encode())
    return [str(p) for p in found]


def test_checks_load_with_their_window_and_environments() -> None:
    config, found = load_config(CONFIG.format(checks="""\
      - name: errors
        query: 'sum(rate(x{app="{app}"}[1m]))'
        success: result < 0.01
        interval: 10s
        window: 1m
        failure_limit: 2
      - name: paging
        alert: WebDown
        environments: [production]""").encode())
    assert found == [] and config is not None
    errors, paging = config.apps["web"].verify
    assert (errors.kind, errors.count, errors.interval_seconds, errors.failure_limit) == (QUERY, 7, 10.0, 2)
    assert config.apps["web"].checks_for("staging") == (errors,)
    assert config.environments["production"].require_verified
    assert config.environments["production"].on_verification_failure == "freeze"


def test_an_app_that_can_never_be_verified_where_it_is_required_is_a_warning_naming_it() -> None:
    only_production = """\
      - name: paging
        alert: WebDown
        environments: [production]"""
    config, found = load_config(CONFIG.format(checks=only_production).encode())
    assert config is not None and [p.severity for p in found] == ["warning"]
    assert (found[0].line, found[0].env, found[0].app) == (3, "production", "web")
    assert "apps.web has no verify check in staging" in found[0].message
    assert "every SHA of web will be refused in production" in found[0].message
    everywhere = "      - name: paging\n        alert: WebDown"
    assert load_config(CONFIG.format(checks=everywhere).encode())[1] == []


@pytest.mark.parametrize(("checks", "message"), [
    ("      - name: a\n        query: x\n        success: import os", "deployctl.yaml:8: apps.web.verify[0].success"),
    ("      - name: a\n        query: x", "apps.web.verify[0].success is missing"),
    ("      - name: a\n        query: x\n        alert: Y\n        success: result < 1", "give either query"),
    ("      - name: a\n        query: x\n        success: result < 1\n        count: 2\n        failure_limit: 2",
     "lets every one of the 2 measurements fail"),
    ("      - name: a\n        alert: Y\n        environments: [prod]", "names unknown environment 'prod'"),
    ("      - name: a\n        query: x\n        success: result < 1\n      - name: a\n        alert: Y",
     "is used twice"),
])
def test_a_bad_check_is_an_error_naming_its_key_and_line(checks: str, message: str) -> None:
    assert any(message in p for p in problems(checks)), problems(checks)


CHECK = Check(name="errors", kind=QUERY, query='x{app="{app}"}', condition=parse_condition("result < 0.01"),
              interval_seconds=1, count=3, failure_limit=1)


def test_every_series_must_meet_the_condition_and_no_data_fails() -> None:
    assert rules.measure_query(CHECK, [0.001, 0.002], at=AT).passed
    failing = rules.measure_query(CHECK, [0.001, 0.3], at=AT)
    assert not failing.passed and failing.value == 0.3 and "1 of 2 series" in (failing.error or "")
    empty = rules.measure_query(CHECK, [], at=AT)
    assert not empty.passed and empty.error == "the query returned no data"


def test_the_failure_limit_tolerates_that_many_bad_measurements_and_the_reason_names_query_value_threshold() -> None:
    once = [rules.measure_query(CHECK, [v], at=AT) for v in (0.001, 0.5, 0.002)]
    assert rules.verdict([rules.outcome(CHECK, 'x{app="web"}', once)])[0] == VerifyResult.VERIFIED
    twice = [rules.measure_query(CHECK, [v], at=AT) for v in (0.4, 0.5)]
    assert rules.decided(CHECK, twice)
    result, reason = rules.verdict([rules.outcome(CHECK, 'x{app="web"}', twice)])
    assert result == VerifyResult.FAILED
    assert reason == 'errors: x{app="web"} = 0.5, wanted result < 0.01 (2 of 2 measurements failed; 1 allowed)'


def test_an_unreachable_prometheus_fails_closed_with_its_own_reason() -> None:
    down = [rules.failed_measurement("cannot reach http://p:9090: connection refused", at=AT, unreachable=True)] * 2
    result, reason = rules.verdict([rules.outcome(CHECK, "x", down)])
    assert result == VerifyResult.FAILED and reason.startswith("errors: Prometheus unreachable: cannot reach")


def test_an_alert_counts_only_when_its_labels_are_this_deploys() -> None:
    alert = Check(name="paging", kind="alert", query="WebDown")
    others = [{"alertname": "WebDown", "app": "api"}, {"alertname": "WebDown", "namespace": "other"}]
    assert rules.measure_alert(alert, others, app="web", env="staging", namespace="s", at=AT).passed
    mine = [{"alertname": "WebDown", "app": "web"}, {"alertname": "WebDown"}]
    assert rules.measure_alert(alert, mine, app="web", env="staging", namespace="s", at=AT).value == 2


def test_measurements_are_scheduled_interval_apart_per_check() -> None:
    slow = Check(name="slow", kind="alert", query="A", interval_seconds=5, count=2)
    assert rules.schedule([CHECK, slow]) == [(0, 0), (0, 1), (1, 0), (2, 0), (5, 1)]


def verification(sha: str, result: VerifyResult, minutes: int, env: str = "staging") -> Verification:
    return Verification(attempt_id=minutes, env=env, app="web", sha=sha, result=result, reason="r", checks=(),
                        started_at=AT, finished_at=AT + timedelta(minutes=minutes), id=minutes)


def test_roll_forward_goes_to_the_newest_sha_whose_latest_verification_passed() -> None:
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    history = [verification(a, VerifyResult.VERIFIED, 1), verification(b, VerifyResult.VERIFIED, 2),
               verification(b, VerifyResult.FAILED, 3), verification(c, VerifyResult.FAILED, 4)]
    assert rules.last_verified(history, env="staging", app="web", besides=c) == a
    assert rules.last_verified(history[2:], env="staging", app="web", besides=c) is None


def test_require_verified_refuses_a_failed_or_unverified_sha_and_says_which() -> None:
    config, _ = load_config(CONFIG.format(checks="      - name: a\n        alert: Y").encode())
    assert config is not None
    good, bad, never = "a" * 40, "b" * 40, "c" * 40
    targets = [Target(env="production", app="web", sha=sha, image=f"reg.example.com/web:{sha}", namespace="p",
                      container="web", path="environments/production/web.deploy", line=1, depends_on=())
               for sha in (good, bad, never)]
    facts = [RunFact("staging", "web", sha, "succeeded") for sha in (good, bad, never)]
    verified = {("staging", "web", good): ("verified", "ok"), ("staging", "web", bad): ("verification-failed", "boom")}
    results = check_gates(targets, config, facts, source="audit", verified=verified)
    assert [r.passed for r in results] == [True, False, False]
    assert "failed verification in staging (boom)" in results[1].message()
    assert "was never verified there" in results[2].message()
    unknown = check_gates(targets[:1], config, facts, source="git", verified=None)[0]
    assert not unknown.passed and "give --audit URL" in unknown.message()
