"""CDEvents in CloudEvents 1.0 envelopes, built with the ``cloudevents`` SDK.

Two content modes (the CDEvents CloudEvents binding):

- ``structured``: the whole CloudEvent is the body, ``Content-Type: application/cloudevents+json``;
- ``binary``: the CloudEvent attributes are headers (``ce-id``, ``ce-type``... over HTTP,
  ``ce_id``... over Kafka) and the body is the CDEvent itself (``application/json``).

Every event carries ``ce-subject`` = ``<env>/<app>`` and the ``partitionkey`` extension with the
same value (the Kafka message key), so one app's events stay in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from deployctl.rules.cdevents import cdevent

MODES = ("structured", "binary")
STRUCTURED_CONTENT_TYPE = JSONFormat.CONTENT_TYPE
"""``application/cloudevents+json``."""


@dataclass(frozen=True)
class Message:
    """One encoded event: headers, body and the partition key ``<env>/<app>``."""

    headers: Mapping[str, str]
    body: bytes
    key: str


def cloud_event(payload: Mapping[str, Any], *, source: str) -> CloudEvent | None:
    """The CloudEvent of an outbox payload, or None when the attempt deployed nothing."""
    data = cdevent(payload, source=source)
    if data is None:
        return None
    context = data["context"]
    subject = data["subject"]["id"]
    return CloudEvent(
        attributes={
            "specversion": "1.0",
            "id": context["id"],
            "source": context["source"],
            "type": context["type"],
            "subject": subject,
            "time": _parse_time(str(context["timestamp"])),
            "datacontenttype": "application/json",
            "partitionkey": subject,
        },
        data=data,
    )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def http_message(payload: Mapping[str, Any], *, source: str, mode: str) -> Message | None:
    """The HTTP headers and body of an outbox payload as a CloudEvent in ``mode``."""
    event = cloud_event(payload, source=source)
    if event is None:
        return None
    encode = ce_http.to_structured if mode == "structured" else ce_http.to_binary
    encoded = encode(event, JSONFormat())
    return Message(headers=dict(encoded.headers), body=encoded.body, key=str(event.get_subject()))


def kafka_message(payload: Mapping[str, Any], *, source: str, mode: str) -> Message | None:
    """The Kafka headers, value and key of an outbox payload as a CloudEvent in ``mode``."""
    event = cloud_event(payload, source=source)
    if event is None:
        return None
    encode = ce_kafka.to_structured if mode == "structured" else ce_kafka.to_binary
    encoded = encode(event, JSONFormat())
    headers = {name: value.decode() for name, value in encoded.headers.items()}
    return Message(headers=headers, body=encoded.value, key=str(event.get_subject()))
