"""The controller's HTTP listener: aiohttp behind a connection cap, read deadlines and size caps.

Anyone who can reach the webhook port can open connections, so none of them may hold the
process's resources for long:

- **Header deadline.** A connection must send a complete request head within
  ``header_timeout`` of opening (or of its previous response); otherwise it is closed. This
  is aiohttp's keep-alive timer, which starts when the connection opens and is not reset by
  partial data, so an idle connection and a slow-loris one are treated alike.
- **Body deadline.** Handlers read the body under ``body_timeout`` (:func:`read_body`: 408).
- **Connection cap.** At most ``max_connections`` are open. A new connection over the cap
  evicts the oldest one that has no request in a handler (idle, or still sending its head);
  when every connection is busy the new one gets a bare ``503`` and is closed. A flood of
  idle connections therefore cannot lock out the Git host's next push.
- **Size caps.** Request line and header fields 8 KiB, ``max_headers`` header lines, body
  ``max_body`` (413).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import structlog
from aiohttp import web

from deployctl.controller.ratelimit import RateLimiter

log = structlog.get_logger(__name__)

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_body: int = 1024 * 1024
    max_headers: int = 64
    max_field_size: int = 8190
    backlog: int = 1024  # also how many connections asyncio accepts in one go


class BodyTimeout(Exception):  # noqa: N818 - a signal for the handler, answered 408
    """The client did not send its body within the body deadline."""


async def read_body(request: web.Request, *, timeout: float) -> bytes:
    """The request body, read under a deadline (raises :class:`BodyTimeout`)."""
    try:
        return await asyncio.wait_for(request.read(), timeout)
    except TimeoutError as exc:
        raise BodyTimeout(f"the body did not arrive within {timeout:g}s") from exc


class _Tracked(asyncio.Protocol):
    """One connection: the aiohttp request handler behind the pool's admission check."""

    def __init__(self, pool: ConnectionPool, inner: asyncio.Protocol) -> None:
        self.pool = pool
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0  # requests of this connection inside a handler
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.pool.admit(self):
            transport.write(_BUSY)
            transport.close()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.discard(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


class ConnectionPool:
    """Admits connections up to a cap, evicting the oldest idle one when full."""

    def __init__(self, *, limit: int, limiter: RateLimiter | None = None) -> None:
        self.limit = max(1, limit)
        self.server: web.Server | None = None
        self.limiter = limiter or RateLimiter()
        self._open: dict[asyncio.BaseTransport, _Tracked] = {}  # insertion order: oldest first
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def protocol(self) -> asyncio.Protocol:
        assert self.server is not None, "start the site first"
        return _Tracked(self, self.server())

    def admit(self, conn: _Tracked) -> bool:
        assert conn.transport is not None
        if len(self._open) >= self.limit:
            victim = next((c for c in self._open.values() if c.busy == 0), None)
            if victim is None:
                self.refused += 1
                self._note("http.connection_refused", refused=self.refused)
                return False
            assert victim.transport is not None
            del self._open[victim.transport]
            victim.transport.close()
            self.evicted += 1
            self._note("http.connection_evicted", evicted=self.evicted)
        self._open[conn.transport] = conn
        return True

    def discard(self, conn: _Tracked) -> None:
        if conn.transport is not None and self._open.get(conn.transport) is conn:
            del self._open[conn.transport]

    def _note(self, event: str, **fields: Any) -> None:
        allowed, suppressed = self.limiter.allow(event)
        if allowed:
            log.warning(event, limit=self.limit, suppressed_since_last=suppressed, **fields)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Marks the request's connection busy while a handler runs (busy connections are not evicted)."""
        transport = request.transport
        conn = self._open.get(transport) if transport is not None else None
        if conn is not None:
            conn.busy += 1
        try:
            return await handler(request)
        finally:
            if conn is not None:
                conn.busy -= 1


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionPool`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, pool: ConnectionPool, backlog: int) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._pool = pool

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert isinstance(server, web.Server)
        self._pool.server = server
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._pool.protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class _RateLimited(logging.Filter):
    """Drops stdlib log records (asyncio's accept errors, aiohttp's) over the rate limit."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        return self.limiter.allow(f"{record.name}:{record.msg}")[0]


_STDLIB_LOGGERS = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal")


def limit_library_logs(limiter: RateLimiter) -> None:
    """Rate-limit what asyncio and aiohttp log through the stdlib (once per process)."""
    for name in _STDLIB_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RateLimited) for f in logger.filters):
            logger.addFilter(_RateLimited(limiter))


def fit_to_fd_limit(limits: ServerLimits) -> ServerLimits:
    """``limits`` with the connection cap and the accept backlog each lowered to a quarter of the
    process's open-file limit. asyncio accepts up to a backlog of connections in one go and the ones
    evicted meanwhile are closed only after that, so open connections can reach cap + backlog for a
    moment; at half the limit they still leave the descriptors git, the cluster and the audit store
    need (running out would make asyncio stop accepting for a second)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits
    quarter = max(1, soft // 4)
    fitted = replace(limits, max_connections=min(limits.max_connections, quarter),
                     backlog=min(limits.backlog, max(16, quarter)))
    if fitted.max_connections < limits.max_connections:
        log.warning("http.max_connections_lowered", requested=limits.max_connections,
                    max_connections=fitted.max_connections, backlog=fitted.backlog, open_file_limit=soft)
    return fitted


async def start(app: web.Application, *, host: str, port: int, limits: ServerLimits) -> tuple[web.AppRunner, ConnectionPool]:
    """Serve ``app`` on host:port under ``limits``; ``await runner.cleanup()`` stops it."""
    pool = ConnectionPool(limit=limits.max_connections)
    limit_library_logs(pool.limiter)
    app.middlewares.append(pool.middleware)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False,
        keepalive_timeout=limits.header_timeout,
        max_line_size=limits.max_field_size, max_field_size=limits.max_field_size, max_headers=limits.max_headers,
        lingering_time=1.0,
    )
    await runner.setup()
    site = GuardedSite(runner, host, port, pool=pool, backlog=limits.backlog)
    await site.start()
    return runner, pool
