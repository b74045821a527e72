"""Deploy events onto a real Apache Kafka broker (KRaft, one node) from the audit outbox."""

from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.notify import drain
from deployctl.edges.sinks import NotifySettings, parse_settings
from deployctl.model.audit import AuditStore
from tests.fixtures.auditdata import make_attempt, sha
from tests.fixtures.cdevents import assert_valid
from tests.fixtures.kafka import SASL_PASSWORD, SASL_USER

pytestmark = pytest.mark.integration
confluent_kafka = pytest.importorskip("confluent_kafka")


def consume(bootstrap: str, topic: str, want: int, *, seconds: float = 30) -> list[Any]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # assigned, not subscribed: no consumer-group rebalance to wait for
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in partitions])
    got: list[Any] = []
    deadline = time.monotonic() + seconds
    try:
        while len(got) < want and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message)
        extra = consumer.poll(0.5)  # nothing more than wanted
        if extra is not None and extra.error() is None:
            got.append(extra)
    finally:
        consumer.close()
    return got


def kafka_settings(bootstrap: str, topic: str, **more: Any) -> NotifySettings:
    entry = {"type": "kafka", "bootstrap_servers": bootstrap, "topic": topic, "repo": "acme/deploy", **more}
    return parse_settings({"notify": [entry]}, source="settings.yaml")


def finished_store(tmp_path: Path, settings: NotifySettings) -> AuditStore:
    """A store whose sinks are registered, then: web upgraded, api first deployed, worker failed."""
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    for sink in settings.sinks:
        store.register_sink(sink.name)
    now = datetime.now(UTC)
    web = store.start(make_attempt(started_at=now - timedelta(seconds=30)))
    api = store.start(make_attempt(app="api", previous_sha=None, image=f"registry.local/api:{sha('2')}"))
    worker = store.start(make_attempt(app="worker", new_sha=sha("3")))
    store.finish(web, result="succeeded", digest="sha256:" + "c" * 64)
    store.finish(api, result="succeeded")
    store.finish(worker, result="failed", error="rollout timed out")
    return store


def test_structured_cdevents_reach_the_topic_keyed_by_env_and_app(kafka_broker: str, tmp_path: Path) -> None:
    topic = f"deploys-{uuid.uuid4().hex[:8]}"
    settings = kafka_settings(kafka_broker, topic)
    store = finished_store(tmp_path, settings)
    try:
        report = drain(store, settings, max_wait_seconds=0)
        assert report.ok and report.delivered == 2
        again = drain(store, settings, max_wait_seconds=0)  # the outbox remembers: nothing twice
        assert again.delivered == 0
        deliveries = store.deliveries()
    finally:
        store.close()
    messages = consume(kafka_broker, topic, 2)
    assert len(messages) == 2
    by_key = {m.key().decode(): m for m in messages}
    assert set(by_key) == {"production/web", "production/api"}
    for key, message in by_key.items():
        assert dict(message.headers())["content-type"] == b"application/cloudevents+json"
        envelope = json.loads(message.value())
        assert envelope["specversion"] == "1.0" and envelope["subject"] == key
        assert_valid(envelope["data"])
        assert envelope["data"]["customData"]["dev.deployctl"]["repo"] == "acme/deploy"
    web = json.loads(by_key["production/web"].value())
    api = json.loads(by_key["production/api"].value())
    assert web["type"] == "dev.cdevents.service.upgraded.0.2.0"
    assert web["data"]["subject"]["content"]["artifactId"].startswith("pkg:oci/web@sha256%3Acccc")
    assert api["type"] == "dev.cdevents.service.deployed.0.2.0"
    skipped = [d for d in deliveries if d.error and d.error.startswith("not sent")]
    assert len(skipped) == 1 and "failed" in (skipped[0].error or "")
    # the same ids as `events export --format cdevents` (and a webhook sink): a consumer dedupes across them
    exported = CliRunner().invoke(main, ["events", "export", "--audit", f"sqlite:///{tmp_path / 'audit.db'}",
                                         "--format", "cdevents", "--repo", "acme/deploy"])
    assert exported.exit_code == 0, exported.output
    assert sorted(json.loads(line)["id"] for line in exported.output.splitlines()) == sorted(
        json.loads(m.value())["id"] for m in messages)


def test_binary_mode_and_json_format_on_kafka(kafka_broker: str, tmp_path: Path) -> None:
    binary_topic, json_topic = f"bin-{uuid.uuid4().hex[:8]}", f"json-{uuid.uuid4().hex[:8]}"
    entries = [
        {"type": "kafka", "name": "bin", "bootstrap_servers": kafka_broker, "topic": binary_topic, "mode": "binary"},
        {"type": "kafka", "name": "flat", "bootstrap_servers": kafka_broker, "topic": json_topic, "format": "json"},
    ]
    settings = parse_settings({"notify": entries}, source="settings.yaml")
    store = finished_store(tmp_path, settings)
    try:
        assert drain(store, settings, max_wait_seconds=0).ok
    finally:
        store.close()
    binary = consume(kafka_broker, binary_topic, 2)
    headers = [dict(m.headers()) for m in binary]
    assert {h["ce_type"] for h in headers} == {
        b"dev.cdevents.service.upgraded.0.2.0",
        b"dev.cdevents.service.deployed.0.2.0",
    }
    assert all(h["ce_id"] and h["content-type"] == b"application/json" for h in headers)
    for message in binary:
        assert_valid(json.loads(message.value()))
    flat = consume(kafka_broker, json_topic, 3)  # today's shape: every outcome, failures too
    assert sorted(json.loads(m.value())["result"] for m in flat) == ["failed", "succeeded", "succeeded"]


def test_an_unreachable_broker_leaves_the_events_in_the_outbox(kafka_broker: str, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
    topic = f"retry-{uuid.uuid4().hex[:8]}"
    down = kafka_settings(dead, topic, name="deploys", timeout_seconds=1, max_attempts=5)
    store = finished_store(tmp_path, down)
    try:
        report = drain(store, down, max_wait_seconds=0, base_delay=60)
        assert (report.delivered, report.failed_attempts, report.pending) == (0, 2, 2) and not report.gave_up
        failed = [d for d in store.deliveries(sink="deploys") if not d.ok]
        assert failed and "timed out" in (failed[0].error or "")
        up = kafka_settings(kafka_broker, topic, name="deploys")
        later = drain(store, up, max_wait_seconds=0, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
        assert later.delivered == 2
    finally:
        store.close()
    assert len(consume(kafka_broker, topic, 2)) == 2


def test_sasl_credentials_come_from_the_environment(kafka_sasl: str, kafka_broker: str, tmp_path: Path) -> None:
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    sasl = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_username_env": "KAFKA_USER", "sasl_password_env": "KAFKA_PASSWORD"}  # fmt: skip
    settings = kafka_settings(kafka_sasl, topic, name="deploys", timeout_seconds=2, **sasl)
    store = finished_store(tmp_path, settings)
    try:
        wrong = drain(store, settings, max_wait_seconds=0, base_delay=60,
                      environ={"KAFKA_USER": SASL_USER, "KAFKA_PASSWORD": "not-the-password"})  # fmt: skip
        assert wrong.delivered == 0 and wrong.pending == 2
        failure = [d.error for d in store.deliveries(sink="deploys") if not d.ok][0] or ""
        assert "uthentication" in failure and "not-the-password" not in failure
        right = drain(store, settings, max_wait_seconds=0, environ={"KAFKA_USER": SASL_USER, "KAFKA_PASSWORD": SASL_PASSWORD},
                      clock=lambda: datetime.now(UTC) + timedelta(hours=1))  # fmt: skip
        assert right.delivered == 2
    finally:
        store.close()
    assert len(consume(kafka_broker, topic, 2)) == 2


def test_a_recorded_verification_reaches_the_topic_after_its_deploy_as_a_custom_cdevent(
    kafka_broker: str, tmp_path: Path
) -> None:
    from deployctl.model.verification import CheckOutcome, Measurement, Verification

    topic = f"verify-{uuid.uuid4().hex[:8]}"
    settings = kafka_settings(kafka_broker, topic)
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        for sink in settings.sinks:
            store.register_sink(sink.name)
        now = datetime.now(UTC)
        web = store.start(make_attempt(started_at=now - timedelta(seconds=90)))
        store.finish(web, result="succeeded")
        check = CheckOutcome(name="errors", kind="query", query='sum(rate(errors{app="web"}[1m]))',
                             wanted="result < 0.01", failure_limit=0,
                             measurements=(Measurement(at=now, value=0.25, passed=False),))
        verification_id = store.record_verification(Verification(
            attempt_id=web, env="production", app="web", sha=sha("2"), result="verification-failed",
            reason="errors: 0.25 (wanted result < 0.01)", checks=(check,), started_at=now - timedelta(seconds=30),
            finished_at=now))
        report = drain(store, settings, max_wait_seconds=0)
        assert report.ok and report.delivered == 2
    finally:
        store.close()
    messages = consume(kafka_broker, topic, 2)
    assert [m.key().decode() for m in messages] == ["production/web", "production/web"]  # one partition, in order
    deployed, verified = (json.loads(m.value()) for m in messages)
    assert deployed["type"] == "dev.cdevents.service.upgraded.0.2.0"
    assert verified["type"] == "dev.cdeventsx.deployctl-verification.finished.0.1.0"
    assert verified["id"] != deployed["id"]
    assert_valid(verified["data"])
    content = verified["data"]["subject"]["content"]
    assert content["outcome"] == "failure" and content["reason"] == "errors: 0.25 (wanted result < 0.01)"
    assert content["checks"][0]["lastValue"] == 0.25 and content["checks"][0]["condition"] == "result < 0.01"
    ours = verified["data"]["customData"]["dev.deployctl"]
    assert (ours["attemptId"], ours["verificationId"], ours["repo"]) == (web, verification_id, "acme/deploy")
