"""Who may read the dashboard. Pure decisions on a request's peer address and headers.

The rule: a listener on a loopback address (127.0.0.0/8, ::1, ``localhost``) with neither a
token nor a trusted proxy configured is open, as it is only reachable from this machine.
Everything else needs, on every request, either ``Authorization: Bearer <token>`` or an
``X-Forwarded-User`` header sent by one of the configured proxy addresses (an auth proxy such
as oauth2-proxy in front of the dashboard). Configuring a token or a proxy turns the check on
for a loopback listener too (a sidecar proxy talks to 127.0.0.1). A request that passes neither
check gets 401; the header of an untrusted peer is ignored, never believed.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deployctl import settings
from deployctl.errors import InvalidInputError

TOKEN_ENV = settings.UI_TOKEN.name
TOKEN_FILE_ENV = settings.UI_TOKEN_FILE.name
PROXIES_ENV = settings.UI_TRUSTED_PROXIES.name
USER_HEADER = "X-Forwarded-User"
MAX_USER = 200

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UiAuthError(InvalidInputError):
    """The dashboard's auth settings cannot be read."""


def is_loopback(host: str) -> bool:
    """Whether a listen host is reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as reachable from elsewhere


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.5``, ``10.0.0.0/24``, ``::1`` (space- or comma-separated) -> networks."""
    out: list[Network] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise UiAuthError(
                    f"trusted proxy {item!r} is not an IP address or network (e.g. 127.0.0.1 or 10.0.0.0/24)"
                ) from None
    return tuple(out)


def load_token(*, file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The bearer token: ``file`` (or $DEPLOYCTL_UI_TOKEN_FILE), else $DEPLOYCTL_UI_TOKEN; None if unset."""
    env = os.environ if environ is None else environ
    path = file or env.get(TOKEN_FILE_ENV)
    if path:
        try:
            value = Path(path).read_bytes()[:4096].strip()
        except OSError as exc:
            raise UiAuthError(f"cannot read the dashboard token file {path}: {exc.strerror}") from exc
        if not value:
            raise UiAuthError(f"the dashboard token file {path} is empty")
        return value
    raw = env.get(TOKEN_ENV, "").strip()
    return raw.encode() or None


@dataclass(frozen=True)
class UiAuth:
    """The dashboard's access rule for one listener."""

    required: bool
    token: bytes | None = None
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def for_listener(cls, host: str, *, token: bytes | None = None,
                     trusted_proxies: Sequence[Network] = ()) -> UiAuth:
        required = bool(token) or bool(trusted_proxies) or not is_loopback(host)
        return cls(required=required, token=token or None, trusted_proxies=tuple(trusted_proxies))

    @property
    def configured(self) -> bool:
        return self.token is not None or bool(self.trusted_proxies)

    def describe(self) -> str:
        if not self.required:
            return "open (loopback listener, no token or proxy configured)"
        ways = []
        if self.token is not None:
            ways.append("bearer token")
        if self.trusted_proxies:
            ways.append(f"{USER_HEADER} from {', '.join(str(n) for n in self.trusted_proxies)}")
        return "requires " + (" or ".join(ways) if ways else "a token or proxy, none configured: every request gets 401")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    user: str | None
    reason: str


def _trusted(peer: str | None, networks: Sequence[Network]) -> bool:
    if not peer or not networks:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    return any(address in net for net in networks)


def decide(auth: UiAuth, *, peer: str | None, headers: Mapping[str, str]) -> Decision:
    """Whether a request from ``peer`` with ``headers`` may read the dashboard, and as whom."""
    if not auth.required:
        return Decision(True, None, "open")
    authorization = headers.get("Authorization")
    if auth.token is not None and authorization:
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(auth.token, given.strip().encode("utf-8", "replace")):
            return Decision(True, "token", "bearer token")
    user = headers.get(USER_HEADER, "").strip()
    if user and _trusted(peer, auth.trusted_proxies):
        return Decision(True, user[:MAX_USER], f"{USER_HEADER} from trusted proxy {peer}")
    if not auth.configured:
        why = ("this dashboard listens on a non-loopback address without a token or trusted proxy; "
               "configure --ui-token-file / $DEPLOYCTL_UI_TOKEN or --trusted-proxy")
    else:
        why = "missing or wrong bearer token, and no user header from a trusted proxy"
    return Decision(False, None, why)
