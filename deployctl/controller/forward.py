"""A webhook that reaches a standby replica is handed on to the leader, never dropped.

Only the leader acts. The Service in ``deploy/`` sends webhooks to ready pods, and only the
leader is ready, but for a few seconds around a change of leader (or when a sender reaches a
pod directly) a standby gets one. It has already authenticated the hook; it then sends the
leader a small request of its own, ``POST /hooks/forwarded`` with ``{"provider", "sha", "from"}``,
signed with an HMAC-SHA256 of that body under the shared webhook secret (the secret itself
never leaves the pod; the sender's token or signature is not passed on). The leader's URL is
the ``deployctl.dev/leader-address`` annotation the leader writes into the Lease.

The standby answers the sender ``202`` only when the leader answered ``202``; when there is
no leader, its address is unknown or unusable, or it does not answer ``202`` within
``timeout``, the standby answers ``503`` so the sender retries. A forwarded request is never
forwarded again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

FORWARD_PATH = "/hooks/forwarded"
SIGNATURE_HEADER = "X-Deployctl-Forward-Signature"
MAX_FORWARD_BODY = 4096
_CONTEXT = b"deployctl-forward\n"  # so a forward signature is never a valid GitHub signature and back


class ForwardError(ValueError):
    """A forwarded request that is not what a replica sends."""


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, _CONTEXT + body, hashlib.sha256).hexdigest()


def verify(secret: bytes | None, body: bytes, header: str | None) -> bool:
    if not secret or not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode("utf-8", "replace"))


def encode(*, provider: str, sha: str | None, sender: str) -> bytes:
    return json.dumps({"provider": provider, "sha": sha, "from": sender}, sort_keys=True).encode()


def decode(body: bytes) -> tuple[str, str | None, str]:
    """(provider, sha, sender) of a forwarded request's body."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ForwardError(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ForwardError("body is not a JSON object")
    provider, sha, sender = doc.get("provider"), doc.get("sha"), doc.get("from")
    if not isinstance(provider, str) or not isinstance(sender, str):
        raise ForwardError("'provider' and 'from' must be strings")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 40
                            or any(c not in "0123456789abcdef" for c in sha)):
        raise ForwardError("'sha' is not a 40-hex commit SHA")
    return provider[:32], sha, sender[:253]


def usable_address(address: str) -> str | None:
    """Why ``address`` (from the Lease) cannot be forwarded to, or None when it can."""
    try:
        parts = urlsplit(address)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "it is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an http(s) URL with a host"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "it carries credentials, a query or a fragment"
    return None


@dataclass(frozen=True)
class Forwarded:
    ok: bool
    message: str


class Forwarder:
    """Sends a standby's authenticated webhook to the leader named in the Lease."""

    def __init__(
        self,
        *,
        leader: Callable[[], tuple[str | None, str | None]],
        identity: str,
        own_address: str | None,
        secret: bytes | None,
        timeout: float = 2.0,
    ) -> None:
        self.leader = leader
        self.identity = identity
        self.own_address = own_address
        self.secret = secret
        self.timeout = timeout

    async def forward(self, *, provider: str, sha: str | None) -> Forwarded:
        holder, address = self.leader()
        if holder is None:
            return Forwarded(False, "no replica holds the leader lease right now")
        if holder == self.identity:
            return Forwarded(False, "this replica's lease is being renewed or released; it may not act now")
        if not address:
            return Forwarded(False, f"the leader {holder} has not recorded its address in the lease")
        why = usable_address(address)
        if why is not None:
            return Forwarded(False, f"the leader {holder}'s recorded address is unusable: {why}")
        if self.own_address and address.rstrip("/") == self.own_address.rstrip("/"):
            return Forwarded(False, "the lease names this replica's own address for another holder")
        if not self.secret:
            return Forwarded(False, "no webhook secret to sign the forward with")
        body = encode(provider=provider, sha=sha, sender=self.identity)
        url = address.rstrip("/") + FORWARD_PATH
        headers = {SIGNATURE_HEADER: sign(self.secret, body), "Content-Type": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.post(url, data=body, headers=headers, allow_redirects=False) as response,
            ):
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            kind = "no answer" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
            return Forwarded(False, f"cannot reach the leader {holder} at {address} within {self.timeout:g}s ({kind})")
        if status == 202:
            return Forwarded(True, f"forwarded to the leader {holder}")
        return Forwarded(False, f"the leader {holder} at {address} answered {status}")
