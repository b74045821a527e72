"""The Kafka notification sink: deploy events onto a topic, keyed ``<env>/<app>``.

Delivery is at-least-once through the audit outbox: an event is recorded as delivered only
after every in-sync replica acknowledged it (``acks=all``); the producer is idempotent, so the
client's own retries never duplicate a message, and a repeat after a crash between the
acknowledgement and the outbox write carries the same CloudEvents ``id`` (derived from the attempt) for
consumers to drop. The key keeps one app's events in one partition, in order.

Configured in the controller's settings file (secrets are read from the environment)::

    notify:
      - type: kafka
        bootstrap_servers: kafka-1.internal:9093,kafka-2.internal:9093
        topic: deploys
        format: cdevents                 # or json (the flat export shape); default cdevents
        mode: structured                 # or binary (ce_* headers); default structured
        security_protocol: SASL_SSL      # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
        sasl_mechanism: SCRAM-SHA-512    # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
        sasl_username_env: KAFKA_USER
        sasl_password_env: KAFKA_PASSWORD
        ssl_ca_env: KAFKA_CA_FILE        # optional: a CA bundle file for the brokers' certificates

We use confluent-kafka (librdkafka): maintained by Confluent, a synchronous API that fits the
synchronous drain, wheels that bundle librdkafka with SASL/SCRAM and TLS, and the idempotent
producer implemented in full (aiokafka would force an event loop into ``notify drain``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from deployctl import __version__
from deployctl.edges.events.envelope import Message, kafka_message
from deployctl.errors import InvalidInputError

log = structlog.get_logger(__name__)

KAFKA_KEYS = frozenset(
    {
        "bootstrap_servers",
        "topic",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username_env",
        "sasl_password_env",
        "ssl_ca_env",
    }
)
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SERVER = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PublishError(Exception):
    """One publish to Kafka failed; ``permanent`` when retrying cannot help."""

    retry_after: float | None = None

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class KafkaTarget:
    """Where and how a Kafka sink connects; secrets are environment variable names."""

    bootstrap_servers: tuple[str, ...]
    topic: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username_env: str | None = None
    sasl_password_env: str | None = None
    ssl_ca_env: str | None = None

    def config(self, environ: Mapping[str, str], *, timeout_seconds: float) -> dict[str, Any]:
        """The librdkafka producer configuration; raises InvalidInputError if a secret is missing."""
        conf: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.bootstrap_servers),
            "client.id": f"deployctl/{__version__}",
            "enable.idempotence": True,
            "acks": "all",
            "security.protocol": self.security_protocol,
            # a total deadline for one message, retries included, and for each connection
            "message.timeout.ms": int(timeout_seconds * 1000),
            "socket.connection.setup.timeout.ms": int(min(timeout_seconds, 30) * 1000),
            "socket.timeout.ms": int(max(timeout_seconds, 10) * 1000),
            "linger.ms": 0,
            # librdkafka logs every refused connection to stderr; the delivery error says it once
            "log_level": 2,
        }
        if self.sasl_mechanism is not None:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = _secret(environ, self.sasl_username_env, "sasl_username_env")
            conf["sasl.password"] = _secret(environ, self.sasl_password_env, "sasl_password_env")
        if self.ssl_ca_env is not None:
            conf["ssl.ca.location"] = _secret(environ, self.ssl_ca_env, "ssl_ca_env")
        return conf


def check_ready(target: KafkaTarget, environ: Mapping[str, str], *, timeout_seconds: float) -> None:
    """Fail before anything is sent when the Kafka client is not installed or a secret is missing."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise InvalidInputError(
            f"kafka sink for topic {target.topic}: the Kafka client is not installed; "
            "pip install 'deployctl[kafka]' (confluent-kafka)"
        ) from None
    target.config(environ, timeout_seconds=timeout_seconds)


def _secret(environ: Mapping[str, str], name: str | None, key: str) -> str:
    value = environ.get(name or "")
    if not value:
        raise InvalidInputError(f"kafka sink: environment variable {name} ({key}) is not set")
    return value


def parse_target(entry: Mapping[str, Any], *, where: str) -> KafkaTarget:
    """The Kafka part of one ``notify:`` entry, validated."""
    servers = entry.get("bootstrap_servers")
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not isinstance(servers, list) or not servers or not all(isinstance(s, str) for s in servers):
        raise InvalidInputError(f"{where}: bootstrap_servers must list host:port addresses")
    for server in servers:
        if not _SERVER.match(server):
            raise InvalidInputError(f"{where}: bootstrap server {server!r} is not host:port")
    topic = entry.get("topic")
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise InvalidInputError(f"{where}: topic must be a Kafka topic name (letters, digits, . _ -)")
    protocol = entry.get("security_protocol", "PLAINTEXT")
    if protocol not in SECURITY_PROTOCOLS:
        raise InvalidInputError(
            f"{where}: security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    mechanism = entry.get("sasl_mechanism")
    sasl = protocol.startswith("SASL_")
    if sasl != (mechanism is not None):
        raise InvalidInputError(
            f"{where}: sasl_mechanism goes with security_protocol SASL_PLAINTEXT or SASL_SSL, and only with them"
        )
    if mechanism is not None and mechanism not in SASL_MECHANISMS:
        raise InvalidInputError(f"{where}: sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}")
    names: dict[str, str | None] = {}
    for key in ("sasl_username_env", "sasl_password_env", "ssl_ca_env"):
        value = entry.get(key)
        if value is not None and (not isinstance(value, str) or not _ENV_NAME.match(value)):
            raise InvalidInputError(f"{where}: {key} must name an environment variable")
        names[key] = value
    if sasl and not (names["sasl_username_env"] and names["sasl_password_env"]):
        raise InvalidInputError(f"{where}: SASL needs sasl_username_env and sasl_password_env")
    return KafkaTarget(
        bootstrap_servers=tuple(servers),
        topic=topic,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username_env=names["sasl_username_env"],
        sasl_password_env=names["sasl_password_env"],
        ssl_ca_env=names["ssl_ca_env"],
    )


def encode(
    payload: Mapping[str, Any], *, key: str, fmt: str, mode: str, source: str, repo: str | None
) -> Message | None:
    """The message for one outbox event: a CloudEvent (``cdevents``) or the flat JSON (``json``).

    None when a CDEvents sink gets an outcome that deployed nothing.
    """
    if fmt == "cdevents":
        return kafka_message({**payload, "idempotency_key": key, "repo": repo}, source=source, mode=mode)
    body = json.dumps({**payload, "idempotency_key": key}, sort_keys=True, separators=(",", ":")).encode()
    return Message(
        headers={"content-type": "application/json", "idempotency-key": key},
        body=body,
        key=f"{payload.get('env')}/{payload.get('app')}",
    )


class KafkaPublishers:
    """One idempotent producer per Kafka sink, for the length of one drain."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self._producers: dict[str, Any] = {}
        self._client_errors: dict[str, str] = {}
        """The last connection-level error of each sink's producer (refused, authentication, TLS)."""

    def publish(self, sink_name: str, target: KafkaTarget, message: Message, *, timeout: float) -> None:
        """Send ``message`` and wait for the brokers' acknowledgement (or raise PublishError)."""
        from confluent_kafka import KafkaError, KafkaException, Producer

        producer = self._producers.get(sink_name)
        if producer is None:
            conf = target.config(self.environ, timeout_seconds=timeout)
            conf["error_cb"] = lambda err: self._client_errors.__setitem__(sink_name, str(err.str()))
            producer = Producer(conf)
            self._producers[sink_name] = producer
        self._client_errors.pop(sink_name, None)
        outcome: list[Any] = []
        try:
            producer.produce(
                target.topic,
                value=message.body,
                key=message.key.encode(),
                headers=[(name, value.encode()) for name, value in message.headers.items()],
                on_delivery=lambda err, _msg: outcome.append(err),
            )
        except (KafkaException, BufferError) as exc:
            raise PublishError(f"kafka {target.topic}: cannot queue the event: {exc}") from exc
        remaining = producer.flush(timeout + 5)
        if remaining or not outcome:
            why = self._client_errors.get(sink_name, "")
            raise PublishError(
                f"kafka {target.topic}: no acknowledgement within {timeout:.0f}s" + (f" ({why[:300]})" if why else "")
            )
        err = outcome[0]
        if err is not None:
            if err.fatal():  # an idempotent producer that failed fatally cannot be used again
                self._producers.pop(sink_name, None)
            fatal = err.fatal() or err.code() in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.MSG_SIZE_TOO_LARGE,
                KafkaError._INVALID_ARG,
            )
            known = self._client_errors.get(sink_name)
            detail = f" ({known[:300]})" if known else ""
            raise PublishError(f"kafka {target.topic}: {err.str()}{detail}", permanent=bool(fatal))
        log.debug("kafka.published", sink=sink_name, topic=target.topic, key=message.key)

    def close(self) -> None:
        for producer in self._producers.values():
            producer.flush(5)
        self._producers.clear()
