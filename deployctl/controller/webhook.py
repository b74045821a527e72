"""The controller's HTTP endpoint: push webhooks, health, readiness and metrics (aiohttp).

``POST /hooks/github`` (``X-Hub-Signature-256`` HMAC of the body), ``POST /hooks/gitlab``
(``X-Gitlab-Token``) and ``POST /hooks/generic`` (``Authorization: Bearer``) all check one
shared secret. Authentication comes first, on the raw body: anything unauthenticated gets 401
and triggers nothing; only then is the body parsed (malformed or nested deeper than
:data:`MAX_JSON_DEPTH` -> 400, oversized -> 413, body not sent in time -> 408). A valid push to
the watched branch asks the controller for an immediate fetch and reconcile and is answered
202 at once; a replica that may not act (a standby) hands the hook on to the leader
(:mod:`deployctl.controller.forward`) and answers 202 only when the leader took it, else 503
so that the sender retries. Pushes to other branches and other events are answered 202 and
ignored. ``GET /healthz``, ``GET /readyz`` and ``GET /metrics`` need no authentication. One log
line per request, rate-limited (:mod:`deployctl.controller.ratelimit`).

The checks (:func:`verify_github`, :func:`verify_token`, :func:`verify_bearer`,
:func:`parse_push`) are pure functions; :func:`make_app` is the thin aiohttp shell.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs

import structlog
from aiohttp import web

from deployctl import settings
from deployctl.controller import forward as fwd
from deployctl.controller.httpserver import BodyTimeout, ServerLimits, read_body
from deployctl.controller.metrics import CONTENT_TYPE, ControllerMetrics
from deployctl.controller.ratelimit import RateLimiter
from deployctl.errors import InvalidInputError
from deployctl.model.vocabulary import Trigger

log = structlog.get_logger(__name__)

SECRET_ENV = settings.WEBHOOK_SECRET.name
SECRET_FILE_ENV = settings.WEBHOOK_SECRET_FILE.name
MAX_BODY = 1024 * 1024
MAX_JSON_DEPTH = 64
PROVIDERS = ("github", "gitlab", "generic")
ZERO_SHA = "0" * 40


class WebhookSecretError(InvalidInputError):
    """The webhook secret cannot be read."""


def load_secret(*, file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The shared webhook secret: ``file`` (or $DEPLOYCTL_WEBHOOK_SECRET_FILE), else $DEPLOYCTL_WEBHOOK_SECRET.

    Trailing newlines of a file are dropped (``echo secret > file``). None when no secret is
    configured, or it is empty: then every hook is answered 401.
    """
    env = os.environ if environ is None else environ
    path = file or env.get(SECRET_FILE_ENV)
    if path:
        try:
            value = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise WebhookSecretError(f"cannot read the webhook secret file {path}: {exc.strerror}") from exc
        return value or None
    raw = env.get(SECRET_ENV, "")
    return raw.encode() or None


# -- pure checks --------------------------------------------------------------------------------


def github_signature(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_github(secret: bytes | None, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the HMAC-SHA256 of ``body`` under ``secret`` (constant-time compare)."""
    if not secret or not header:
        return False
    return hmac.compare_digest(github_signature(secret, body).encode(), header.strip().encode("utf-8", "replace"))


def verify_token(secret: bytes | None, header: str | None) -> bool:
    """True when ``header`` (``X-Gitlab-Token``) equals ``secret`` (constant-time compare)."""
    if not secret or header is None:
        return False
    return hmac.compare_digest(secret, header.encode("utf-8", "replace"))


def verify_bearer(secret: bytes | None, authorization: str | None) -> bool:
    """True when ``authorization`` is ``Bearer <secret>`` (scheme case-insensitive)."""
    if not secret or not authorization:
        return False
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return verify_token(secret, token.strip())


def authenticate(provider: str, secret: bytes | None, headers: Mapping[str, str], body: bytes) -> bool:
    """The provider's check on a request's headers and raw body."""
    if provider == "github":
        return verify_github(secret, body, headers.get("X-Hub-Signature-256"))
    if provider == "gitlab":
        return verify_token(secret, headers.get("X-Gitlab-Token"))
    if provider == "generic":
        return verify_bearer(secret, headers.get("Authorization"))
    return False


@dataclass(frozen=True)
class HookVerdict:
    """What an authenticated hook asks for: a sync of ``branch`` (``sha`` when the sender said), or nothing."""

    sync: bool
    reason: str
    branch: str | None = None
    sha: str | None = None


class MalformedHook(ValueError):
    """The body of an authenticated hook is not what its provider sends."""


_SPECIAL = re.compile(rb'[\[\]{}"\\]')


def json_depth(body: bytes, *, limit: int) -> int:
    """How deep ``body``'s arrays and objects nest (brackets inside strings do not count),
    counting no further than ``limit + 1``. Runs before ``json.loads``, so that no body can
    make the parser recurse deeply."""
    depth = deepest = 0
    in_string = False
    skip = -1  # the position of a character escaped by a backslash
    for m in _SPECIAL.finditer(body):
        pos = m.start()
        if pos == skip:
            continue
        c = body[pos]
        if in_string:
            if c == 0x5C:  # backslash: the next character is escaped
                skip = pos + 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif c in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _json_object(body: bytes) -> dict[str, object]:
    if json_depth(body, limit=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise MalformedHook(f"body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedHook(f"body is not JSON: {exc}") from exc
    except RecursionError as exc:  # not reached after the depth check; kept as the backstop
        raise MalformedHook("body nests too deeply") from exc
    if not isinstance(doc, dict):
        raise MalformedHook("body is not a JSON object")
    return doc


def _github_payload(headers: Mapping[str, str], body: bytes) -> bytes:
    # GitHub may be set to send the JSON form-encoded, as the `payload` field.
    if headers.get("Content-Type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return body
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedHook(f"form body is not valid: {exc}") from exc
    payload = fields.get("payload")
    if not payload or len(payload) != 1:
        raise MalformedHook("form body has no single 'payload' field")
    return payload[0].encode()


def _branch_of(ref: object) -> str:
    if not isinstance(ref, str) or not ref:
        raise MalformedHook("'ref' is missing or not a string")
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ref


def _sha_of(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 40 or any(c not in "0123456789abcdef" for c in value):
        raise MalformedHook("'after' is not a 40-hex commit SHA")
    return value


def parse_push(provider: str, headers: Mapping[str, str], body: bytes, *, branch: str) -> HookVerdict:
    """Decide what an authenticated hook asks for; raises :class:`MalformedHook` on a bad body."""
    if provider == "github":
        event = headers.get("X-GitHub-Event", "")
        if event == "ping":
            return HookVerdict(False, "ping")
        if event != "push":
            return HookVerdict(False, f"event {event or '(none)'} is not a push")
        doc = _json_object(_github_payload(headers, body))
        ref, after = doc.get("ref"), doc.get("after")
    elif provider == "gitlab":
        event = headers.get("X-Gitlab-Event", "")
        if event not in ("Push Hook", "System Hook"):
            return HookVerdict(False, f"event {event or '(none)'} is not a push")
        doc = _json_object(body)
        ref, after = doc.get("ref"), doc.get("after")
    else:
        if not body.strip():
            return HookVerdict(True, "push", branch=branch)
        doc = _json_object(body)
        ref = doc.get("ref", doc.get("branch", f"refs/heads/{branch}"))
        after = doc.get("after", doc.get("sha"))
    pushed = _branch_of(ref)
    sha = _sha_of(after)
    if pushed != branch:
        return HookVerdict(False, f"push to {pushed}, not the watched branch {branch}", branch=pushed, sha=sha)
    if sha == ZERO_SHA:
        return HookVerdict(False, f"branch {branch} was deleted", branch=pushed)
    return HookVerdict(True, "push", branch=pushed, sha=sha)


# -- the aiohttp shell --------------------------------------------------------------------------


class SyncTarget(Protocol):
    """What the endpoint needs from the controller."""

    def request_sync(self, trigger: str, *, sha: str | None = None) -> None: ...

    def ready(self) -> tuple[bool, str]: ...

    def health(self) -> tuple[bool, str]: ...

    def may_act(self) -> bool: ...


_WARN = frozenset((400, 401, 408, 413, 503))


def make_app(
    target: SyncTarget,
    *,
    secret: bytes | None,
    branch: str,
    metrics: ControllerMetrics,
    limits: ServerLimits | None = None,
    forwarder: fwd.Forwarder | None = None,
    limiter: RateLimiter | None = None,
) -> web.Application:
    """The controller's aiohttp application (serve it with :func:`deployctl.controller.httpserver.start`)."""
    lim = limits or ServerLimits()
    max_body = lim.max_body
    app = web.Application(client_max_size=max_body)
    log_limit = limiter or RateLimiter()

    def reply(provider: str, result: str, status: int, message: str) -> web.Response:
        metrics.webhook(provider, result)
        allowed, suppressed = log_limit.allow(f"webhook:{provider}:{result}")
        if allowed:
            emit = log.warning if status in _WARN else log.info
            emit("webhook.request", provider=provider, result=result, status=status,
                 message=message, **({"suppressed_since_last": suppressed} if suppressed else {}))
        headers = {"Retry-After": "1"} if status == 503 else None
        # after a 408 or 413 aiohttp reads what is left of the body for at most its lingering time, then closes
        return web.json_response({"result": result, "message": message}, status=status, headers=headers)

    async def body_of(provider: str, request: web.Request, limit: int) -> bytes | web.Response:
        if request.content_length is not None and request.content_length > limit:
            return reply(provider, "too-large", 413, f"body over {limit} bytes")
        try:
            body = await read_body(request, timeout=lim.body_timeout)
        except web.HTTPRequestEntityTooLarge:
            return reply(provider, "too-large", 413, f"body over {limit} bytes")
        except BodyTimeout as exc:
            return reply(provider, "timeout", 408, str(exc))
        if len(body) > limit:
            return reply(provider, "too-large", 413, f"body over {limit} bytes")
        return body

    def hook(provider: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await body_of(provider, request, max_body)
            if isinstance(body, web.Response):
                return body
            if not authenticate(provider, secret, request.headers, body):
                return reply(provider, "unauthorized", 401, "missing or wrong signature or token")
            try:
                verdict = parse_push(provider, request.headers, body, branch=branch)
            except MalformedHook as exc:
                return reply(provider, "malformed", 400, str(exc))
            if not verdict.sync:
                return reply(provider, "ignored", 202, verdict.reason)
            if target.may_act():
                target.request_sync(Trigger.WEBHOOK, sha=verdict.sha)
                return reply(provider, "accepted", 202, f"sync of {branch} requested")
            if forwarder is None:
                return reply(provider, "unavailable", 503, "this replica may not act now (shutting down); retry")
            forwarded = await forwarder.forward(provider=provider, sha=verdict.sha)
            if forwarded.ok:
                return reply(provider, "forwarded", 202, forwarded.message)
            return reply(provider, "unavailable", 503, f"this replica is on standby and {forwarded.message}; retry")

        return handle

    async def forwarded(request: web.Request) -> web.StreamResponse:
        body = await body_of("forwarded", request, fwd.MAX_FORWARD_BODY)
        if isinstance(body, web.Response):
            return body
        if not fwd.verify(secret, body, request.headers.get(fwd.SIGNATURE_HEADER)):
            return reply("forwarded", "unauthorized", 401, "missing or wrong forward signature")
        try:
            provider, sha, sender = fwd.decode(body)
        except fwd.ForwardError as exc:
            return reply("forwarded", "malformed", 400, str(exc))
        if not target.may_act():  # never forwarded twice: the standby answers its sender 503
            return reply("forwarded", "unavailable", 503, "this replica is not the leader (any more)")
        target.request_sync(Trigger.WEBHOOK, sha=sha)
        return reply("forwarded", "accepted", 202, f"sync of {branch} requested ({provider} hook via {sender})")

    async def healthz(request: web.Request) -> web.StreamResponse:
        ok, why = target.health()
        return web.json_response({"status": "ok" if ok else "failing", "message": why}, status=200 if ok else 503)

    async def readyz(request: web.Request) -> web.StreamResponse:
        ok, why = target.ready()
        return web.json_response({"ready": ok, "message": why}, status=200 if ok else 503)

    async def metrics_page(request: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    for provider in PROVIDERS:
        app.router.add_post(f"/hooks/{provider}", hook(provider))
    app.router.add_post(fwd.FORWARD_PATH, forwarded)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
