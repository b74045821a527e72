"""The one outbound HTTP client (registry, token services, notifications): bounded in time, size and trust.

Every call has a *total* deadline: connect, TLS, sending, the status line, headers and body together,
retries included. A watchdog shuts the socket down when the deadline passes, so a server that trickles
one byte a second cannot hold a call longer than its deadline (a per-read timeout would never fire).
The deadline is named in the error. Bodies are read up to ``max_bytes``.

Connections are kept alive and reused per (scheme, host, proxy). ``HTTPS_PROXY``/``HTTP_PROXY``/
``NO_PROXY`` (or lowercase) are honoured; loopback never goes through a proxy. Idempotent reads (GET,
HEAD) are retried with backoff on connection errors and 502/503/504 while the deadline allows; a POST is
sent once (a dropped keep-alive connection is the only retry: the request never reached the server).

Redirects are followed only when the caller allows it, only to http(s), and headers named in
``credential_headers`` (Authorization by default) are dropped when a redirect leaves the original
scheme, host and port or goes from https to http: a credential never follows a redirect elsewhere.

This stack is built on ``http.client`` rather than requests/urllib3 because those bound each socket read,
not the call, and a total deadline needs the socket (see docs/security.md). Name resolution, which has no
socket to shut down, runs on its own thread and the call stops waiting for it at the deadline.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from deployctl.edges.watchdog import Alarm
from deployctl.redact import redact

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({502, 503, 504})
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
# Lookups in flight at once. getaddrinfo cannot be cancelled, so one that hangs keeps its thread (a daemon)
# and its slot until the resolver gives up; past this many, calls wait for a slot within their deadline.
_LOOKUP_SLOTS = threading.BoundedSemaphore(16)

AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


class HttpError(Exception):
    """A call that got no usable answer: unreachable, past its deadline, too large, or a refused redirect."""


class DeadlineExceeded(HttpError):
    """The call did not complete within its total deadline."""


class ResponseTooLarge(HttpError):
    """The answer is larger than the caller's bound; ``status`` is the answer's status."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class RedirectRefused(HttpError):
    """A redirect to a scheme other than http(s), or more redirects than allowed."""


@dataclass(frozen=True)
class Response:
    """A complete answer. ``url`` is where it came from (after any redirects); header names are lowercase."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x``, ``::1`` (with or without a port or brackets)."""
    name = host.strip("[]").lower()
    if name.count(":") < 2:  # not a bare IPv6 address: a name or IPv4, maybe with a port
        name = (urllib.parse.urlsplit(f"//{host}").hostname or "").lower()
    elif host.startswith("["):
        name = (urllib.parse.urlsplit(f"//{host}").hostname or "").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the unit a credential is bound to."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy URL for ``url`` from ``HTTPS_PROXY``/``HTTP_PROXY`` minus ``NO_PROXY``; never for loopback."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host):
        return None
    name = f"{parts.scheme.lower()}_proxy"
    proxy = environ.get(name) or environ.get(name.upper())
    if not proxy:
        return None
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    if no_proxy and urllib.request.proxy_bypass_environment(netloc, {"no": no_proxy}):  # type: ignore[attr-defined]
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


@dataclass
class _Pool:
    lock: threading.Lock = field(default_factory=threading.Lock)
    idle: dict[tuple[str, str, str | None], list[http.client.HTTPConnection]] = field(default_factory=dict)


class HttpClient:
    """Outbound HTTP with total deadlines, bounded bodies, proxies, keep-alive and safe redirects. Thread-safe."""

    def __init__(
        self,
        *,
        user_agent: str,
        ssl_context: ssl.SSLContext | None = None,
        environ: Mapping[str, str] | None = None,
        retries: int = 2,
        backoff_seconds: float = 0.1,
    ) -> None:
        """``environ`` is where proxy variables are read (default: ``os.environ`` at each call)."""
        self._user_agent = user_agent
        self._ssl_context = ssl_context  # the default one is made at the first https call (loading CAs costs)
        self._environ = environ
        self._retries = max(0, retries)
        self._backoff = backoff_seconds
        self._pool = _Pool()

    def close(self) -> None:
        """Close idle connections."""
        with self._pool.lock:
            idle, self._pool.idle = self._pool.idle, {}
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        deadline: float,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_redirects: int = 0,
        credential_headers: Collection[str] = ("authorization",),
    ) -> Response:
        """One call that completes within ``deadline`` seconds or raises :class:`HttpError`.

        With ``max_redirects=0`` a redirect is returned as it is; otherwise up to that many are followed.
        """
        expires = time.monotonic() + deadline
        send = {"User-Agent": self._user_agent, **(headers or {})}
        drop = {h.lower() for h in credential_headers}
        first = url
        for _ in range(max_redirects + 1):
            response = self._with_retries(method, url, send, body, expires, deadline, max_bytes)
            location = response.header("location")
            if max_redirects == 0 or response.status not in REDIRECT_STATUSES or not location:
                return response
            target = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
                raise RedirectRefused(f"{_where(url)} redirected to a non-http URL; not followed")
            if not same_origin(first, target):
                send = {k: v for k, v in send.items() if k.lower() not in drop}
            if response.status == 303:
                method, body = "GET", None
            url = target
        raise RedirectRefused(f"more than {max_redirects} redirects from {_where(first)}")

    # -- one URL, with retries --

    def _with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        expires: float,
        deadline: float,
        max_bytes: int,
    ) -> Response:
        retries = self._retries if method.upper() in IDEMPOTENT_METHODS else 0
        attempt = 0
        while True:
            try:
                response = self._once(method, url, headers, body, expires, deadline, max_bytes)
            except (DeadlineExceeded, ResponseTooLarge):
                raise
            except HttpError:
                if attempt >= retries:
                    raise
            else:
                if response.status not in RETRY_STATUSES or attempt >= retries:
                    return response
            pause = self._backoff * 2**attempt
            if time.monotonic() + pause >= expires:
                raise DeadlineExceeded(_deadline_message(url, deadline))
            time.sleep(pause)
            attempt += 1

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        expires: float,
        deadline: float,
        max_bytes: int,
    ) -> Response:
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise HttpError(f"unsupported URL scheme {scheme!r}")
        environ = os.environ if self._environ is None else self._environ
        proxy = proxy_for(url, environ)
        key = (scheme, parts.netloc.rsplit("@", 1)[-1], proxy)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if proxy is not None and scheme == "http":
            target = urllib.parse.urlunsplit((scheme, key[1], parts.path or "/", parts.query, ""))
        send = dict(headers)
        if proxy is not None and scheme == "http":
            send.update(_proxy_auth(proxy))
        for attempt in range(2):
            remaining = expires - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(_deadline_message(url, deadline))
            with self._pool.lock:
                idle = self._pool.idle.get(key)
                conn = idle.pop() if idle else None
            reused = conn is not None
            alarm: Alarm | None = None
            try:
                if conn is None:
                    conn = self._connect(scheme, key[1], proxy, remaining)
                    conn._create_connection = _connector(expires)  # type: ignore[attr-defined]
                alarm = Alarm(conn, remaining)
                if conn.sock is None:
                    conn.connect()
                else:
                    conn.sock.settimeout(remaining)
                conn.request(method, target, body=body, headers=send)
                raw = conn.getresponse()
                data = _read_bounded(raw, max_bytes=max_bytes, where=_where(url), method=method)
            except ResponseTooLarge:
                if alarm is not None:
                    alarm.cancel()
                if conn is not None:
                    conn.close()
                raise
            except (OSError, http.client.HTTPException, ValueError) as exc:
                fired = alarm.cancel() if alarm is not None else False
                if conn is not None:
                    conn.close()
                if fired or time.monotonic() >= expires:
                    raise DeadlineExceeded(_deadline_message(url, deadline)) from exc
                if reused and attempt == 0 and isinstance(exc, _STALE_CONNECTION_ERRORS):
                    continue  # the server closed an idle keep-alive connection; the request never reached it
                raise HttpError(describe_connection_error(exc, key[1])) from exc
            if alarm.cancel() or raw.will_close:
                conn.close()
            else:
                with self._pool.lock:
                    self._pool.idle.setdefault(key, []).append(conn)
            return Response(raw.status, _headers(raw), data, url)
        raise AssertionError("unreachable")

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _connect(
        self, scheme: str, netloc: str, proxy: str | None, timeout: float
    ) -> http.client.HTTPConnection:
        if proxy is None:
            if scheme == "https":
                return http.client.HTTPSConnection(netloc, timeout=timeout, context=self._tls())
            return http.client.HTTPConnection(netloc, timeout=timeout)
        proxy_parts = urllib.parse.urlsplit(proxy)
        if proxy_parts.scheme.lower() != "http":
            raise HttpError(f"proxy {redact(proxy)}: only http:// proxies are supported")
        proxy_netloc = proxy_parts.netloc.rsplit("@", 1)[-1]
        if scheme == "http":
            return http.client.HTTPConnection(proxy_netloc, timeout=timeout)
        conn = http.client.HTTPSConnection(proxy_netloc, timeout=timeout, context=self._tls())
        host, _, port = netloc.rpartition(":") if netloc.rsplit(":", 1)[-1].isdigit() else (netloc, "", "")
        conn.set_tunnel(host.strip("[]"), int(port) if port else None, headers=_proxy_auth(proxy))
        return conn


def resolve(host: str, port: int, expires: float) -> list[AddrInfo]:
    """``socket.getaddrinfo`` for a TCP connection, given up at ``expires`` (monotonic) with TimeoutError.

    A lookup that has not answered by then is left on its daemon thread; the call does not wait for it.
    """
    if not _LOOKUP_SLOTS.acquire(timeout=max(0.0, expires - time.monotonic())):
        raise TimeoutError(f"no free slot to look up {host} before the deadline")
    done = threading.Event()
    found: list[AddrInfo] = []
    failed: list[OSError] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError as exc:  # socket.gaierror among them
            failed.append(exc)
        finally:
            _LOOKUP_SLOTS.release()
            done.set()

    threading.Thread(target=lookup, name=f"lookup {host}", daemon=True).start()
    if not done.wait(max(0.0, expires - time.monotonic())):
        raise TimeoutError(f"no answer from the resolver for {host} before the deadline")
    if failed:
        raise failed[0]
    return found


def _connector(expires: float) -> Callable[..., socket.socket]:
    """``socket.create_connection`` with the name lookup and each connect bounded by ``expires``."""

    def create_connection(
        address: tuple[str, int], timeout: float | None = None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in resolve(host, port, expires):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(max(0.001, expires - time.monotonic()))
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError(f"{host} has no address")

    return create_connection


def _proxy_auth(proxy: str) -> dict[str, str]:
    parts = urllib.parse.urlsplit(proxy)
    if parts.username is None:
        return {}
    pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _read_bounded(raw: http.client.HTTPResponse, *, max_bytes: int, where: str, method: str) -> bytes:
    length = raw.getheader("content-length")
    if method.upper() != "HEAD" and length and length.isdigit() and int(length) > max_bytes:
        raise ResponseTooLarge(
            f"{where} answered {int(length)} bytes, more than the {max_bytes} allowed", status=raw.status
        )
    chunks: list[bytes] = []
    size = 0
    while chunk := raw.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(
                f"{where} answered more than the {max_bytes} bytes allowed", status=raw.status
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _headers(raw: http.client.HTTPResponse) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw.getheaders():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _where(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or redact(url)


def _deadline_message(url: str, deadline: float) -> str:
    return f"no complete answer from {_where(url)} within the {deadline:g} s deadline"


def describe_connection_error(exc: BaseException, netloc: str) -> str:
    """A connection failure in words, without the URL's credentials."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {netloc} refused"
    if isinstance(exc, TimeoutError):
        return f"no answer from {netloc} in time"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {netloc} failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{netloc}: {exc.strerror}"
    if isinstance(exc, http.client.HTTPException):
        return f"{netloc}: {type(exc).__name__} (not a valid HTTP answer)"
    return f"{netloc}: {type(exc).__name__}"
