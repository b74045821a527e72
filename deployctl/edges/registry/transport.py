"""HTTP for the registry edge: pooled keep-alive connections, redirects, connection errors in words."""

from __future__ import annotations

import http.client
import ipaddress
import ssl
import threading
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from deployctl.edges.registry.credentials import DOCKER_HUB

_DOCKER_HUB_API = "registry-1.docker.io"
_MAX_REDIRECTS = 3
_USER_AGENT = "deployctl-registry/0.1"


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Unreachable(Exception):
    """A connection-level failure (refused, DNS, timeout, TLS)."""


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def api_base_url(registry: str, *, insecure_registries: Collection[str] = ()) -> str:
    """Where a registry's API lives: plain http for loopback and listed insecure hosts, else https."""
    api_host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
    plain = registry in insecure_registries or registry.rsplit(":", 1)[0] in insecure_registries
    scheme = "http" if plain or is_loopback(registry) else "https"
    return f"{scheme}://{api_host}"


class Transport:
    """Pooled keep-alive HTTP(S) connections; thread-safe."""

    def __init__(self, *, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self._timeout = timeout
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}

    def close(self) -> None:
        """Close idle connections."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def request(self, method: str, url: str, headers: Mapping[str, str]) -> Response:
        """One request, following up to three redirects (dropping Authorization across hosts)."""
        send = {"User-Agent": _USER_AGENT, **headers}
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            response = self._send(parts.scheme, parts.netloc, method, target, send)
            location = response.header("location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response
            next_url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(next_url).netloc != parts.netloc:
                send = {k: v for k, v in send.items() if k.lower() != "authorization"}
            url = next_url
        raise Unreachable(f"more than {_MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _send(
        self, scheme: str, netloc: str, method: str, target: str, headers: Mapping[str, str]
    ) -> Response:
        key = (scheme, netloc)
        for attempt in range(2):
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(scheme, netloc)
            try:
                conn.request(method, target, headers=dict(headers))
                raw = conn.getresponse()
                body = raw.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection; retry on a new one
                raise Unreachable(describe_connection_error(exc, netloc)) from exc
            response = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, body)
            if raw.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.setdefault(key, []).append(conn)
            return response
        raise AssertionError("unreachable")

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._ssl_context)
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=self._timeout)
        raise Unreachable(f"unsupported URL scheme {scheme!r}")


def describe_connection_error(exc: BaseException, netloc: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {netloc} refused"
    if isinstance(exc, TimeoutError):
        return f"no answer from {netloc} in time"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {netloc} failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{netloc}: {exc.strerror}"
    return f"{netloc}: {type(exc).__name__}"


def safe_url(url: str) -> str:
    """A URL without its query or userinfo, fit for messages."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
