"""Deploy notifications: generic JSON webhooks and Slack incoming webhooks, fed from the audit outbox.

Every outcome the audit store records appends an outbox event in the same transaction, so a
notification can never be lost by a crash and can never slow a deploy: delivery happens later,
in :func:`drain` (``deployctl notify drain`` in CI, or a background loop in the controller).
Delivery is at-least-once: failures are retried with exponential backoff, every attempt is
appended to the store, and every event carries one idempotency key (``Idempotency-Key`` header
and ``idempotency_key`` field) so a receiver can drop repeats.

Sinks are configured in the controller's settings file (never in the deploy repo)::

    notify:
      - type: webhook
        url: https://hooks.example.com/deploys
        secret_env: DEPLOY_HOOK_SECRET      # optional: HMAC-SHA256 of the body in X-Deployctl-Signature
      - type: slack
        url_env: SLACK_DEPLOYS_WEBHOOK      # the Slack URL is a secret: read it from the environment
      - type: webhook
        url: https://events.example.com/cdevents
        format: cdevents                    # CDEvents in CloudEvents 1.0 (docs/analytics.md)
        mode: binary                        # ce-* headers; default structured (application/cloudevents+json)
      - type: kafka                         # see deployctl.edges.events.kafka
        bootstrap_servers: kafka.internal:9093
        topic: deploys
"""

from __future__ import annotations

import hashlib
import hmac
import http
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import structlog

from deployctl import __version__
from deployctl.edges.events.envelope import http_message
from deployctl.edges.events.kafka import (
    KafkaPublishers,
    PublishError,
    check_ready,
)
from deployctl.edges.events.kafka import encode as kafka_encode
from deployctl.edges.http import REDIRECT_STATUSES, HttpClient, HttpError, ResponseTooLarge
from deployctl.edges.sinks import NotifySettings, Sink
from deployctl.model.audit import AuditStore, Delivery, OutboxEvent, record_to_event
from deployctl.model.vocabulary import Result
from deployctl.rules.cdevents import VERIFICATION_PAYLOAD, event_id

log = structlog.get_logger(__name__)

_RETRYABLE_STATUS = {408, 425, 429}


class DeliveryError(Exception):
    """One delivery attempt failed; ``permanent`` when retrying cannot help (e.g. HTTP 400)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class HttpRequest:
    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass
class DrainReport:
    """What one drain did: events delivered, still waiting for a retry, and given up."""

    delivered_by_sink: dict[str, int] = field(default_factory=dict)
    failed_attempts: int = 0
    gave_up: list[str] = field(default_factory=list)
    """Idempotency keys of events that will not be retried."""
    pending: int = 0
    """Events still waiting for a retry when the drain stopped."""
    untrusted: list[str] = field(default_factory=list)
    """Events not sent because their rows do not verify in the audit chain: which, and why."""

    @property
    def delivered(self) -> int:
        return sum(self.delivered_by_sink.values())

    @property
    def ok(self) -> bool:
        return not self.gave_up and self.pending == 0


# --- settings (pure) -----------------------------------------------------------------------------


# --- messages (pure) -----------------------------------------------------------------------------

_RESULT_EMOJI: dict[str, str] = {
    Result.SUCCEEDED: ":white_check_mark:",
    Result.FAILED: ":x:",
    Result.BLOCKED: ":no_entry:",
    Result.DRIFT_CORRECTED: ":wrench:",
    Result.INTERRUPTED: ":warning:",
    Result.REFUSED: ":no_entry_sign:",
    Result.SKIPPED: ":fast_forward:",
    "verified": ":white_check_mark:",
    "verification-failed": ":rotating_light:",
}


def slack_escape(text: object) -> str:
    """Text for Slack mrkdwn: ``&``, ``<``, ``>`` escaped, so ``<!channel>`` from a commit message cannot ping."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(event: Mapping[str, Any]) -> str:
    """One Slack mrkdwn line (plus the error) describing a deploy outcome; every value from the event escaped."""
    sha = slack_escape(str(event.get("new_sha") or "")[:12])
    author = slack_escape(
        str(event.get("file_author") or event.get("actor_user") or "unknown").split(" <")[0]
    )
    text = (
        f"{_RESULT_EMOJI.get(str(event.get('result')), ':grey_question:')} "
        f"*{slack_escape(event.get('app'))}* to *{slack_escape(event.get('env'))}*: "
        f"{slack_escape(event.get('result'))} `{sha}` by {author}"
    )
    summary = event.get("app_commit_summary") or event.get("file_commit_summary")
    if summary:
        text += f" — {slack_escape(summary)}"
    if event.get("error"):
        text += f"\n> {slack_escape(event['error'])}"
    return text


def render_request(sink: Sink, event: OutboxEvent, environ: Mapping[str, str]) -> HttpRequest | None:
    """The HTTP request delivering ``event`` to ``sink``; the same bytes on every retry.

    None when a CDEvents sink gets an outcome that deployed nothing (not a service event).
    """
    if sink.format == "cdevents":
        data = {**event.payload, "idempotency_key": event.key, "repo": sink.repo}
        message = http_message(data, source=sink.source, mode=sink.mode)
        if message is None:
            return None
        ce_headers = {**message.headers, "User-Agent": f"deployctl/{__version__}",
                      "Idempotency-Key": event_id(event.payload)}
        request = HttpRequest(url=sink.resolve_url(environ), body=message.body, headers=ce_headers)
        return _signed(sink, request, environ)
    payload: Mapping[str, Any]
    if sink.type == "slack":
        payload = {"text": slack_text(event.payload), "idempotency_key": event.key}
    else:
        payload = {**event.payload, "idempotency_key": event.key}
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"deployctl/{__version__}",
        "Idempotency-Key": event.key,
        "X-Deployctl-Event": str(event.payload.get("event", "deploy.finished")),
    }
    return _signed(sink, HttpRequest(url=sink.resolve_url(environ), body=body, headers=headers), environ)


def _signed(sink: Sink, request: HttpRequest, environ: Mapping[str, str]) -> HttpRequest:
    secret = sink.secret(environ)
    if secret is None:
        return request
    signature = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
    return HttpRequest(request.url, request.body, {**request.headers, "X-Deployctl-Signature": signature})


def backoff(attempt_no: int, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt ``attempt_no`` (1-based): base, 2*base, 4*base, ... up to cap."""
    return float(min(cap, base * 2 ** (attempt_no - 1)))


# --- delivery (I/O) ------------------------------------------------------------------------------


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


_HTTP = HttpClient(user_agent=f"deployctl/{__version__}")
_MAX_ANSWER_BYTES = 64 * 1024


def send(request: HttpRequest, *, timeout: float) -> None:
    """POST ``request`` within a total deadline of ``timeout`` seconds; only a 2xx answer is delivered.

    A redirect is a failed delivery (retried by the outbox), never followed: the event and its signature
    go only to the configured URL.
    """
    where = urllib.parse.urlsplit(request.url).netloc.rsplit("@", 1)[-1]
    try:
        response = _HTTP.request(
            "POST",
            request.url,
            headers=request.headers,
            body=request.body,
            deadline=timeout,
            max_bytes=_MAX_ANSWER_BYTES,
        )
    except ResponseTooLarge as exc:
        if 200 <= exc.status < 300:
            return  # delivered; only the receiver's answer was longer than we read
        raise DeliveryError(f"HTTP {exc.status} {_phrase(exc.status)}") from exc
    except HttpError as exc:
        raise DeliveryError(f"cannot deliver to {where}: {exc}") from exc
    if 200 <= response.status < 300:
        return
    if response.status in REDIRECT_STATUSES:
        target = urllib.parse.urlsplit(response.header("location") or "").hostname or "elsewhere"
        raise DeliveryError(
            f"HTTP {response.status} from {where}: redirected to {target}; redirects are not followed"
        )

    permanent = 400 <= response.status < 500 and response.status not in _RETRYABLE_STATUS
    raise DeliveryError(
        f"HTTP {response.status} {_phrase(response.status)}",
        permanent=permanent,
        retry_after=_retry_after(response.header("retry-after")),
    )


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "(non-standard status)"


def drain(
    store: AuditStore,
    settings: NotifySettings,
    *,
    max_wait_seconds: float = 60.0,
    base_delay: float = 1.0,
    max_delay: float = 300.0,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    backfill_from: datetime | None = None,
) -> DrainReport:
    """Deliver every due outbox event to every sink, retrying failures with backoff.

    Keeps going while a retry falls due within ``max_wait_seconds`` (0: one pass, never waits);
    what is still failing then stays in the outbox for the next drain. With ``backfill_from`` the sinks
    also get the events created since then that they never received (a sink added later: its history).
    """
    env = os.environ if environ is None else environ
    for sink in settings.sinks:  # fail on a missing secret before sending anything
        if sink.kafka is not None:
            check_ready(sink.kafka, env, timeout_seconds=sink.timeout_seconds)
        else:
            sink.resolve_url(env)
            sink.secret(env)
        store.register_sink(sink.name)
    kafka = KafkaPublishers(env)
    report = DrainReport(delivered_by_sink={s.name: 0 for s in settings.sinks})
    deadline = clock() + timedelta(seconds=max_wait_seconds)
    run = _Drain(store, env, report, send, clock, base_delay, max_delay, kafka)
    while True:
        for sink in settings.sinks:
            while events := store.pending_events(sink.name, now=clock(), backfill_from=backfill_from):
                untrusted = untrusted_events(store, events)
                for event in events:
                    if event.id in untrusted:
                        _refuse_one(run, sink, event, untrusted[event.id])
                    else:
                        _deliver_one(run, sink, event)
        retries = [t for t in (store.next_retry_at(s.name) for s in settings.sinks) if t is not None]
        if not retries:
            break
        wake = min(retries)
        if wake > deadline:
            report.pending = sum(_pending_retries(store, s.name, backfill_from) for s in settings.sinks)
            break
        time.sleep(max(0.0, (wake - clock()).total_seconds()))
    kafka.close()
    log.info(
        "notify.drained",
        delivered=report.delivered,
        failed_attempts=report.failed_attempts,
        gave_up=len(report.gave_up),
        pending=report.pending,
    )
    return report


def _pending_retries(store: AuditStore, sink: str, backfill_from: datetime | None) -> int:
    far = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
    return len(store.pending_events(sink, now=far, limit=1_000_000, backfill_from=backfill_from))


@dataclass(frozen=True)
class _Drain:
    """What every delivery of one drain shares."""

    store: AuditStore
    environ: Mapping[str, str]
    report: DrainReport
    transport: Callable[..., None]
    clock: Callable[[], datetime]
    base_delay: float
    max_delay: float
    kafka: KafkaPublishers


def untrusted_events(store: AuditStore, events: Sequence[OutboxEvent]) -> dict[int, str]:
    """Why each of these outbox events must not be sent, by outbox id: its attempt's rows (or, for a
    verification, its verification row) do not verify in the audit chain, or its payload (not chained) says
    other than the attempt's record. A row inserted with SQL must not reach a consumer as a deploy that
    happened (docs/audit.md)."""
    attempts = store.unverified([e.attempt_id for e in events])
    verification_ids = {e.id: v for e in events if (v := _verification_id(e)) is not None}
    verifications = store.unverified_verifications(list(verification_ids.values())) if verification_ids else {}
    out: dict[int, str] = {}
    for e in events:
        reason = attempts.get(e.attempt_id)
        if reason is None and e.id in verification_ids:
            reason = verifications.get(verification_ids[e.id])
        if reason is not None:
            out[e.id] = f"attempt {e.attempt_id} does not verify in the audit chain: {reason}"
        elif (differs := _payload_differs(store, e)) is not None:
            out[e.id] = f"attempt {e.attempt_id}: {differs}"
    return out


_CHECKED_FIELDS = ("id", "env", "app", "new_sha", "previous_sha", "image")
"""What an outbox payload says about its attempt that must be what the attempt's (chained) record says."""


def _payload_differs(store: AuditStore, event: OutboxEvent) -> str | None:
    """Why ``event``'s payload is not what its attempt's record says (the outbox is not chained), or None."""
    record = store.get(event.attempt_id)
    if record is None:
        return f"its outbox event names attempt {event.attempt_id}, which is not on record"
    said, true = event.payload, record_to_event(record)
    deploy_result = said.get("deploy_result") if said.get("event") == VERIFICATION_PAYLOAD else said.get("result")
    wrong = [f for f in _CHECKED_FIELDS if f in said and said[f] != true[f]]
    wrong += ["result"] if deploy_result != record.result else []
    if not wrong:
        return None
    return (f"its outbox event says {', '.join(f'{f}={said.get(f)!r}' for f in wrong if f != 'result')}"
            f"{' result=' + repr(deploy_result) if 'result' in wrong else ''} where the attempt's record says "
            f"{', '.join(f'{f}={true[f]!r}' for f in wrong)}: its payload was edited or inserted with SQL")


def _verification_id(event: OutboxEvent) -> int | None:
    verification = event.payload.get("verification") if event.payload.get("event") == VERIFICATION_PAYLOAD else None
    ident = verification.get("id") if isinstance(verification, Mapping) else None
    return ident if isinstance(ident, int) else None


def _refuse_one(run: _Drain, sink: Sink, event: OutboxEvent, reason: str) -> None:
    """Account for an event that does not verify: recorded as not sent (so it is not pending forever), named."""
    why = f"not sent: {reason}"
    run.store.record_delivery(
        Delivery(event.id, sink.name, event.attempts_made + 1, run.clock(), ok=True, error=why, next_attempt_at=None)
    )
    run.report.untrusted.append(f"{sink.name}: {why}")
    log.warning("notify.untrusted", sink=sink.name, key=event.key, attempt_id=event.attempt_id, reason=reason)


def _deliver_one(run: _Drain, sink: Sink, event: OutboxEvent) -> None:
    store, report, clock = run.store, run.report, run.clock
    attempt_no = event.attempts_made + 1
    started = clock()
    try:
        sent = _send_one(sink, event, run.environ, run.transport, run.kafka)
    except (DeliveryError, PublishError) as exc:
        report.failed_attempts += 1
        give_up = exc.permanent or attempt_no >= sink.max_attempts
        delay = max(backoff(attempt_no, base=run.base_delay, cap=run.max_delay), exc.retry_after or 0.0)
        next_at = None if give_up else clock() + timedelta(seconds=delay)
        store.record_delivery(
            Delivery(
                event.id, sink.name, attempt_no, started, ok=False, error=str(exc), next_attempt_at=next_at
            )
        )
        if give_up:
            report.gave_up.append(event.key)
            log.error("notify.gave_up", sink=sink.name, key=event.key, attempts=attempt_no, error=str(exc))
        else:
            log.warning("notify.retry", sink=sink.name, key=event.key, attempt=attempt_no, error=str(exc))
        return
    if not sent:  # accounted for, so that it is not pending forever, and said to be not sent
        why = f"not sent: a {event.payload.get('result')} outcome is not a CDEvents service event"
        store.record_delivery(
            Delivery(event.id, sink.name, attempt_no, started, ok=True, error=why, next_attempt_at=None)
        )
        log.info("notify.skipped", sink=sink.name, key=event.key, result=event.payload.get("result"))
        return
    store.record_delivery(
        Delivery(event.id, sink.name, attempt_no, started, ok=True, error=None, next_attempt_at=None)
    )
    report.delivered_by_sink[sink.name] += 1
    log.info("notify.delivered", sink=sink.name, key=event.key, attempt=attempt_no)


def _send_one(
    sink: Sink,
    event: OutboxEvent,
    environ: Mapping[str, str],
    transport: Callable[..., None],
    kafka: KafkaPublishers,
) -> bool:
    """Deliver one event to one sink; False when there was nothing to send for this sink."""
    if sink.kafka is not None:
        message = kafka_encode(
            event.payload, key=event.key, fmt=sink.format, mode=sink.mode, source=sink.source, repo=sink.repo
        )
        if message is None:
            return False
        kafka.publish(sink.name, sink.kafka, message, timeout=sink.timeout_seconds)
        return True
    request = render_request(sink, event, environ)
    if request is None:
        return False
    transport(request, timeout=sink.timeout_seconds)
    return True
