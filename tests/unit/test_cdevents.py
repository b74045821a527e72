"""Deploy outcomes as CDEvents: which event, its subject, its extension, its envelope; every one
checked against our JSON Schema for its type."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployctl.edges.events.envelope import http_message, kafka_message
from deployctl.edges.events.kafka import encode, parse_target
from deployctl.edges.notify import render_request
from deployctl.edges.sinks import Sink, parse_settings
from deployctl.errors import InvalidInputError
from deployctl.model.audit import RESULTS, AuditRecord, OutboxEvent, record_to_event
from deployctl.rules.cdevents import cdevent, cdevent_for_record, deploy_event_id, package_url, predicate
from tests.fixtures.auditdata import T0, make_attempt, sha
from tests.fixtures.cdevents import assert_valid

DIGEST = "sha256:" + "ab" * 32


def record(result: str = "succeeded", **changes: Any) -> AuditRecord:
    attempt = make_attempt(**changes)
    return AuditRecord(
        id=7,
        attempt=attempt,
        result=result,
        error=None if result == "succeeded" else "boom",
        finished_at=attempt.started_at + timedelta(seconds=42),
        duration_seconds=42.0,
        digest=DIGEST,
    )


def test_first_deploy_of_an_app_to_an_env_is_service_deployed() -> None:
    event = cdevent_for_record(record(previous_sha=None), source="/deployctl/acme")
    assert event is not None
    assert event["context"]["type"] == "dev.cdevents.service.deployed.0.2.0"
    assert event["subject"]["content"]["environment"]["id"] == "production"
    assert event["subject"]["id"] == "production/web"
    assert_valid(event)


def test_a_new_sha_is_service_upgraded_with_our_fields_in_the_extension() -> None:
    event = cdevent_for_record(record(), source="/deployctl/acme", repo="github.com/acme/deploy")
    assert event is not None
    assert event["context"]["type"] == "dev.cdevents.service.upgraded.0.2.0"
    ours = event["customData"]["dev.deployctl"]
    assert ours["repo"] == "github.com/acme/deploy"
    assert ours["sha"] == sha("2") and ours["previousSha"] == sha("1")
    assert ours["deployCommit"] == sha("d")
    assert ours["author"] == "Ann Author <ann@example.com>"
    assert ours["approvers"] == ["bob@example.com"]
    assert ours["commitMessage"] == "Fix checkout rounding"
    assert ours["digest"] == DIGEST and ours["durationSeconds"] == 42.0
    assert event["context"]["timestamp"] == "2024-05-01T12:00:42Z"
    assert_valid(event)


def test_a_rollback_commit_is_service_rolledback() -> None:
    summary = f"Roll back web in production to {sha('1')[:12]} (from {sha('2')[:12]})"
    event = cdevent_for_record(record(file_commit_summary=summary), source="/deployctl")
    assert event is not None
    assert event["context"]["type"] == "dev.cdevents.service.rolledback.0.2.0"
    assert_valid(event)


@pytest.mark.parametrize("result", [r for r in RESULTS if r not in ("succeeded", "drift-corrected")])
def test_an_outcome_that_deployed_nothing_is_no_service_event(result: str) -> None:
    assert cdevent_for_record(record(result), source="/deployctl") is None


def test_artifact_id_is_the_package_url_of_the_pinned_image() -> None:
    image = "registry.example.com:5000/shop/web:" + sha("2")
    assert package_url(image, DIGEST) == (
        "pkg:oci/web@sha256%3A" + "ab" * 32 + "?repository_url=registry.example.com:5000/shop/web"
    )
    assert package_url("registry.local/web:v1.2", None) == "pkg:oci/web@v1.2?repository_url=registry.local/web"
    event = cdevent_for_record(record(image=image), source="/deployctl")
    assert event is not None
    assert event["subject"]["content"]["artifactId"].startswith("pkg:oci/web@sha256%3A")


def test_the_schema_refuses_an_event_without_environment() -> None:
    event = cdevent_for_record(record(), source="/deployctl")
    assert event is not None
    del event["subject"]["content"]["environment"]
    with pytest.raises(jsonschema.ValidationError, match="environment"):
        assert_valid(event)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=40, deadline=None)
@given(
    previous=st.sampled_from([None, sha("1")]),
    result=st.sampled_from(["succeeded", "drift-corrected"]),
    summary=st.one_of(st.none(), _text),
    app_summary=st.one_of(st.none(), _text),
    author=st.one_of(st.none(), _text),
    reviewers=st.lists(_text, max_size=3),
)
def test_every_emitted_event_matches_its_schema(
    previous: str | None,
    result: str,
    summary: str | None,
    app_summary: str | None,
    author: str | None,
    reviewers: list[str],
) -> None:
    rec = record(
        result,
        previous_sha=previous,
        file_commit_summary=summary,
        app_commit_summary=app_summary,
        file_author=author,
        reviewers=tuple(reviewers),
    )
    event = cdevent(record_to_event(rec), source="/deployctl")
    assert event is not None and predicate(record_to_event(rec)) is not None
    assert_valid(event)
    for mode in ("structured", "binary"):  # the envelopes carry the same event
        message = http_message(record_to_event(rec), source="/deployctl", mode=mode)
        assert message is not None
        body = json.loads(message.body)
        assert_valid(body["data"] if mode == "structured" else body)


def test_structured_http_is_one_cloudevents_json_document() -> None:
    payload = {**record_to_event(record()), "idempotency_key": "key-1"}
    message = http_message(payload, source="/deployctl/acme", mode="structured")
    assert message is not None
    assert message.headers["content-type"] == "application/cloudevents+json"
    body = json.loads(message.body)
    assert body["specversion"] == "1.0"
    assert body["id"] == deploy_event_id(payload) == body["data"]["context"]["id"]
    assert body["type"] == "dev.cdevents.service.upgraded.0.2.0"
    assert body["source"] == "/deployctl/acme"
    assert body["subject"] == "production/web"
    assert body["time"] == "2024-05-01T12:00:42Z"


def test_binary_mode_puts_the_attributes_in_headers() -> None:
    payload = {**record_to_event(record()), "idempotency_key": "key-1"}
    http = http_message(payload, source="/deployctl", mode="binary")
    kafka = kafka_message(payload, source="/deployctl", mode="binary")
    assert http is not None and kafka is not None
    assert http.headers["ce-id"] == deploy_event_id(payload) and http.headers["ce-specversion"] == "1.0"
    assert http.headers["ce-type"] == "dev.cdevents.service.upgraded.0.2.0"
    assert http.headers["content-type"] == "application/json"
    assert kafka.headers["ce_id"] == deploy_event_id(payload) and kafka.key == "production/web"
    assert_valid(json.loads(http.body))


def test_a_cdevents_webhook_sink_renders_a_cloudevent_and_skips_failures() -> None:
    settings_ = parse_settings(
        {"notify": [{"type": "webhook", "url": "https://h.example/x", "format": "cdevents", "mode": "binary"}]},
        source="s.yaml",
    )
    sink = settings_.sinks[0]
    ok = OutboxEvent(1, "k", 7, {**record_to_event(record()), "event": "deploy.finished"}, T0)
    request = render_request(sink, ok, {})
    assert request is not None and request.headers["ce-id"] == deploy_event_id(ok.payload)
    assert request.headers["Idempotency-Key"] == deploy_event_id(ok.payload)
    failed = OutboxEvent(2, "k2", 7, record_to_event(record("failed")), T0)
    assert render_request(sink, failed, {}) is None
    json_sink = Sink(type="webhook", name="w", url="https://h.example/x")
    assert render_request(json_sink, failed, {}) is not None


def test_kafka_sink_settings_are_validated_with_the_entry_named() -> None:
    good = {"type": "kafka", "bootstrap_servers": "127.0.0.1:9092,k2:9093", "topic": "deploys"}
    sink = parse_settings({"notify": [good]}, source="s.yaml").sinks[0]
    assert sink.kafka is not None and sink.kafka.bootstrap_servers == ("127.0.0.1:9092", "k2:9093")
    assert sink.format == "cdevents" and sink.name == "kafka:deploys"
    bad = [
        ({**good, "topic": "no spaces"}, "topic must be"),
        ({**good, "bootstrap_servers": "nohost"}, "not host:port"),
        ({**good, "url": "https://x"}, "unknown key"),
        ({**good, "security_protocol": "SASL_SSL"}, "sasl_mechanism goes with"),
        ({**good, "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "needs sasl_username_env"),
        ({**good, "format": "xml"}, "format must be"),
    ]
    for entry, message in bad:
        with pytest.raises(InvalidInputError, match=rf"s.yaml: notify\[0\]: .*{message}"):
            parse_settings({"notify": [entry]}, source="s.yaml")


def test_kafka_credentials_come_from_the_environment() -> None:
    target = parse_target(
        {
            "bootstrap_servers": ["b:9093"],
            "topic": "t",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username_env": "KU",
            "sasl_password_env": "KP",
        },
        where="w",
    )
    conf = target.config({"KU": "user", "KP": "pw"}, timeout_seconds=10)
    assert conf["sasl.username"] == "user" and conf["sasl.password"] == "pw"
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    with pytest.raises(InvalidInputError, match="KP"):
        target.config({"KU": "user"}, timeout_seconds=10)


def test_kafka_json_format_keeps_todays_shape_keyed_by_env_and_app() -> None:
    payload = record_to_event(record("failed"))
    message = encode(payload, key="k9", fmt="json", mode="structured", source="/d", repo=None)
    assert message is not None and message.key == "production/web"
    assert json.loads(message.body)["idempotency_key"] == "k9"
    assert encode(payload, key="k9", fmt="cdevents", mode="structured", source="/d", repo=None) is None


def test_a_forge_approval_is_in_the_extension_with_its_pull_request() -> None:
    from deployctl.model.review import Approval, ReviewRecord

    review = ReviewRecord(7, "https://git.example.com/acme/deploy/pulls/7", (Approval("@rita", T0, sha("h")),))
    event = cdevent_for_record(record(review=review), source="/deployctl/acme")
    assert event is not None
    ours = event["customData"]["dev.deployctl"]
    assert ours["pullRequest"] == {"number": 7, "url": "https://git.example.com/acme/deploy/pulls/7"}
    assert ours["approvals"] == [{"who": "@rita", "when": T0.isoformat().replace("+00:00", "Z"), "head_sha": sha("h")}]
    assert ours["approvers"] == ["bob@example.com", "@rita"]
    assert_valid(event)


def test_the_event_id_is_derived_from_the_attempt_not_the_outbox_key() -> None:
    event = record_to_event(record())
    assert deploy_event_id({**event, "idempotency_key": "a"}) == deploy_event_id({**event, "idempotency_key": "b"})
    assert deploy_event_id(event) == deploy_event_id(dict(event))  # the same on every call and process
    assert deploy_event_id({**event, "id": event["id"] + 1}) != deploy_event_id(event)
    assert deploy_event_id({**event, "started_at": "2030-01-01T00:00:00Z"}) != deploy_event_id(event)


def verification(result: str = "verification-failed", *, value: float = 0.2, finished: int = 120) -> Any:
    from deployctl.model.verification import CheckOutcome, Measurement, Verification

    passed = result == "verified"
    checks = (CheckOutcome(name="errors", kind="query", query='sum(rate(http_errors{app="web"}[1m]))',
                           wanted="result < 0.01", failure_limit=0,
                           measurements=(Measurement(at=T0, value=value, passed=passed),)),)
    reason = "errors: 1 of 1 passed" if passed else "errors: 0.2 (wanted result < 0.01)"
    return Verification(attempt_id=7, env="production", app="web", sha=sha("2"), result=result, reason=reason,
                        checks=checks, started_at=T0 + timedelta(seconds=60),
                        finished_at=T0 + timedelta(seconds=finished))


def test_a_failed_verification_is_a_custom_event_with_the_outcome_value_and_condition() -> None:
    from deployctl.rules.cdevents import VERIFICATION_EVENT_TYPE, verification_payload

    payload = verification_payload(record(), verification(), verification_id=3)
    event = cdevent(payload, source="/deployctl/acme")
    assert event is not None
    assert_valid(event)
    assert event["context"]["type"] == VERIFICATION_EVENT_TYPE == "dev.cdeventsx.deployctl-verification.finished.0.1.0"
    assert event["context"]["timestamp"] == "2024-05-01T12:02:00Z"  # when the verdict was reached
    content = event["subject"]["content"]
    assert event["subject"]["id"] == "production/web" and content["outcome"] == "failure"
    assert content["reason"] == "errors: 0.2 (wanted result < 0.01)"
    assert content["checks"] == [{"name": "errors", "query": 'sum(rate(http_errors{app="web"}[1m]))',
                                  "condition": "result < 0.01", "passed": False, "failures": 1, "failureLimit": 0,
                                  "lastValue": 0.2}]
    ours = event["customData"]["dev.deployctl"]
    assert (ours["result"], ours["deployResult"], ours["verificationId"]) == ("verification-failed", "succeeded", 3)
    passed = cdevent(verification_payload(record(), verification("verified", value=0.001), verification_id=4),
                     source="/deployctl/acme")
    assert passed is not None and passed["subject"]["content"]["outcome"] == "success"
    assert_valid(passed)


def test_a_verification_event_has_its_own_id_the_same_on_every_sink() -> None:
    from deployctl.rules.cdevents import event_id, verification_payload

    payload = verification_payload(record(), verification(), verification_id=3)
    ident = payload["idempotency_key"]
    assert ident == event_id(payload) != deploy_event_id(record_to_event(record()))  # not the rollout's event
    again = verification_payload(record(), verification(finished=300), verification_id=4)  # verify run again
    assert event_id(again) != ident
    structured = http_message(payload, source="/d", mode="structured")
    binary = kafka_message(payload, source="/d", mode="binary")
    assert structured is not None and binary is not None
    assert json.loads(structured.body)["id"] == ident and binary.headers["ce_id"] == ident
    assert binary.headers["ce_type"] == "dev.cdeventsx.deployctl-verification.finished.0.1.0"
    assert binary.key == "production/web"  # in order with the app's deploy events
    sink = parse_settings({"notify": [{"type": "webhook", "url": "https://h.example/x", "format": "cdevents"}]},
                          source="s.yaml").sinks[0]
    request = render_request(sink, OutboxEvent(1, ident, 7, payload, T0), {})
    assert request is not None and request.headers["Idempotency-Key"] == ident
