"""Notification settings, message rendering and backoff (pure)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from deployctl.edges.notify import backoff, render_request, slack_text
from deployctl.edges.sinks import Sink, parse_settings
from deployctl.errors import InvalidInputError
from deployctl.model.audit import OutboxEvent

EVENT = OutboxEvent(
    id=1,
    key="k-123",
    attempt_id=9,
    payload={
        "event": "deploy.finished",
        "idempotency_key": "k-123",
        "app": "web",
        "env": "production",
        "result": "failed",
        "new_sha": "2" * 40,
        "file_author": "Ann Author <ann@example.com>",
        "app_commit_summary": "Fix checkout rounding",
        "error": "rollout timed out",
    },
    created_at=datetime(2024, 5, 1, tzinfo=UTC),
)


def test_settings_read_webhook_and_slack_sinks_and_ignore_other_keys() -> None:
    settings = parse_settings(
        {
            "watch": {"interval": "1m"},
            "notify": [
                {"type": "webhook", "url": "https://hooks.example/deploys", "secret_env": "HOOK_SECRET"},
                {"type": "slack", "url_env": "SLACK_URL", "name": "slack-deploys", "max_attempts": 3},
            ],
        },
        source="settings.yaml",
    )
    hook, slack = settings.sinks
    assert (hook.type, hook.url, hook.secret_env, hook.max_attempts) == (
        "webhook", "https://hooks.example/deploys", "HOOK_SECRET", 8,
    )  # fmt: skip
    assert hook.name.startswith("webhook:") and "hooks.example" not in hook.name
    assert (slack.name, slack.url_env, slack.max_attempts) == ("slack-deploys", "SLACK_URL", 3)


def test_no_settings_means_no_sinks() -> None:
    assert parse_settings(None, source="s").sinks == ()
    assert parse_settings({"other": 1}, source="s").sinks == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"type": "email", "url": "https://x"},
            r"notify\[0\]: type must be one of webhook, slack, kafka, not 'email'",
        ),
        ({"type": "webhook"}, r"notify\[0\]: give exactly one of url or url_env"),
        ({"type": "webhook", "url": "https://x", "url_env": "U"}, "give exactly one of url or url_env"),
        ({"type": "webhook", "url": "file:///etc/passwd"}, "url must be http"),
        ({"type": "webhook", "url": "https://x", "retries": 3}, r"unknown key\(s\) retries"),
        (
            {"type": "webhook", "url": "https://x", "max_attempts": 0},
            "max_attempts must be a positive integer",
        ),
    ],
)
def test_invalid_sink_names_the_file_entry_and_problem(entry: dict[str, object], message: str) -> None:
    with pytest.raises(
        InvalidInputError, match=f"settings.yaml: {message}" if "notify" in message else message
    ):
        parse_settings({"notify": [entry]}, source="settings.yaml")


def test_two_sinks_with_one_name_are_rejected() -> None:
    entry = {"type": "webhook", "url": "https://x"}
    with pytest.raises(InvalidInputError, match="a second sink named"):
        parse_settings({"notify": [entry, entry]}, source="s")


def test_webhook_request_carries_the_event_the_key_and_a_signature() -> None:
    sink = Sink(type="webhook", name="hook", url="https://hooks.example/d", secret_env="HOOK_SECRET")
    request = render_request(sink, EVENT, {"HOOK_SECRET": "s3cret"})
    body = json.loads(request.body)
    assert body["idempotency_key"] == request.headers["Idempotency-Key"] == "k-123"
    assert body["result"] == "failed" and body["app"] == "web"
    expected = hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Deployctl-Signature"] == f"sha256={expected}"
    assert render_request(sink, EVENT, {"HOOK_SECRET": "s3cret"}) == request  # same bytes on a retry


def test_a_missing_secret_is_an_input_error_naming_the_variable() -> None:
    sink = Sink(type="webhook", name="hook", url="https://x", secret_env="HOOK_SECRET")
    with pytest.raises(InvalidInputError, match="HOOK_SECRET .secret_env. is not set"):
        render_request(sink, EVENT, {})


def test_slack_request_is_an_incoming_webhook_text_with_the_key() -> None:
    sink = Sink(type="slack", name="slack", url_env="SLACK_URL")
    request = render_request(sink, EVENT, {"SLACK_URL": "https://hooks.slack.com/services/T/B/X"})
    assert request.url == "https://hooks.slack.com/services/T/B/X"
    body = json.loads(request.body)
    assert set(body) == {"text", "idempotency_key"}
    assert body["text"] == (
        ":x: *web* to *production*: failed `222222222222` by Ann Author — Fix checkout rounding\n"
        "> rollout timed out"
    )
    assert slack_text({**EVENT.payload, "result": "succeeded", "error": None}).startswith(
        ":white_check_mark:"
    )


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, base=1.0, cap=10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
