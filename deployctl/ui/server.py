"""The dashboard's HTTP shell (aiohttp + Jinja2): pages under ``/ui/``, their JSON under ``/api/v1/``.

Read-only by design: every route is a GET (HEAD); nothing here writes to the repo, the cluster
or the audit store. Every request first passes :func:`deployctl.ui.auth.decide` (401 otherwise).
Templates autoescape everything; the pages load only this server's own script, styles and the
plotly.js that the plotly package ships (no CDN), under a ``script-src 'self'`` policy.

``deployctl ui`` serves :func:`make_app`; ``deployctl watch`` adds the same routes to its own
listener with :func:`add_routes`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import structlog
from aiohttp import web

from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.audit import parse_when
from deployctl.model.verification import Verification
from deployctl.model.vocabulary import Result
from deployctl.ui import apppage
from deployctl.ui.auth import UiAuth, decide
from deployctl.ui.data import STATES, Dashboard, verification_chain_fields

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
POLL_SECONDS = 3
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MAX_QUERY = 200
# Who is viewing, for the request being handled (each request is its own task, with its own context). Not a
# string key on the request: aiohttp warns about those (NotAppKeyWarning), and web.RequestKey needs 3.14.
_VIEWER: ContextVar[str | None] = ContextVar("deployctl_ui_viewer", default=None)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deployctl.ui", "templates"),
        autoescape=True,  # every string from the deploy repo, the cluster or the audit store is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda sha, n=12: (sha or "")[:n]
    env.filters["when"] = _when
    env.filters["took"] = _took
    env.filters["firstline"] = lambda text: (text or "").splitlines()[0] if text else ""
    env.globals["STATES"] = STATES
    env.globals["Result"] = Result
    return env


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.replace("T", " ").replace("Z", " UTC")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _took(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def plotly_js() -> Path | None:
    """The plotly.js bundle the plotly package ships (served as /ui/static/plotly.min.js), if installed."""
    try:
        import plotly  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.exists() else None


def _param(request: web.Request, name: str) -> str:
    return request.query.get(name, "").strip()[:MAX_QUERY]


def _latest(verifications: list[Verification]) -> dict[int, Verification]:
    """Each attempt's newest verification (``verifications`` come newest first)."""
    out: dict[int, Verification] = {}
    for v in verifications:
        out.setdefault(v.attempt_id, v)
    return out


def _with_verification(event: dict[str, Any], verification: Verification | None) -> dict[str, Any]:
    """An exported attempt with its latest verification, as ``deployctl history -o json`` has it."""
    if verification is None:
        return event
    return {**event, "verification": verification.result, "verification_reason": verification.reason,
            **verification_chain_fields(verification)}


def _security_headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def add_routes(app: web.Application, dashboard: Dashboard, auth: UiAuth) -> None:
    """Register ``/ui/...`` and ``/api/v1/...`` (GET only) on ``app``."""
    templates = _templates()
    static = resources.files("deployctl.ui") / "static"

    def guarded(handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            decision = decide(auth, peer=request.remote, headers=request.headers)
            if not decision.allowed:
                log.warning("ui.unauthorized", peer=request.remote, path=request.path)
                response: web.StreamResponse = web.json_response(
                    {"error": "unauthorized", "message": decision.reason}, status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="deployctl"'})
                return _security_headers(response)
            viewer = _VIEWER.set(decision.user)
            try:
                response = await handler(request)
            except web.HTTPNotFound as exc:
                response = await failure(request, 404, exc.text or "not found")
            except DeployctlError as exc:
                log.warning("ui.error", path=request.path, error=str(exc))
                response = await failure(request, 400 if isinstance(exc, InvalidInputError) else 503, str(exc))
            finally:
                _VIEWER.reset(viewer)
            return _security_headers(response)

        return handle

    async def page(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
        text = templates.get_template(name).render(poll_seconds=POLL_SECONDS, path=request.path,
                                                   viewer=_VIEWER.get(), **context)
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    async def failure(request: web.Request, status: int, message: str) -> web.Response:
        if request.path.startswith("/api/"):
            return api({"error": status, "message": message}, status=status)
        return await page(request, "error.html", status=status, message=message)

    async def data(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def api(doc: object, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(doc, indent=2, default=str), status=status,
                            content_type="application/json")

    async def selected(request: web.Request) -> tuple[Any, dict[str, str]]:
        filters = {k: _param(request, k) for k in ("env", "app", "owner")}
        _, snapshot = await data(dashboard.current)
        return snapshot, filters

    async def matrix_page(request: web.Request) -> web.StreamResponse:
        snapshot, filters = await selected(request)
        shown = snapshot.select(**filters)
        fragment = "?" + urlencode({k: v for k, v in filters.items() if v})
        return await page(request, "matrix.html", all=snapshot, snap=shown, filters=filters, query=fragment)

    async def matrix_fragment(request: web.Request) -> web.StreamResponse:
        snapshot, filters = await selected(request)
        return await page(request, "_matrix.html", snap=snapshot.select(**filters))

    async def status_api(request: web.Request) -> web.StreamResponse:
        snapshot, filters = await selected(request)
        return api(snapshot.select(**filters).as_dict())

    async def app_data(request: web.Request) -> apppage.AppPage:
        found = await data(apppage.app_page, dashboard, request.match_info["app"])
        if found is None:
            raise web.HTTPNotFound(text=f"no app {request.match_info['app']!r} in the deploy repo")
        return found  # type: ignore[no-any-return]

    async def app_html(request: web.Request) -> web.StreamResponse:
        return await page(request, "app.html", page=await app_data(request))

    async def app_api(request: web.Request) -> web.StreamResponse:
        return api((await app_data(request)).as_dict())

    def _limit(request: web.Request) -> int:
        raw = _param(request, "limit") or "100"
        if not raw.isdigit():
            raise InvalidInputError(f"limit {raw!r} is not a number")
        return min(int(raw), 5000)

    async def history_api(request: web.Request) -> web.StreamResponse:
        records = await data(dashboard.records, app=request.match_info["app"], env=_param(request, "env") or None,
                             limit=_limit(request))
        checked = await data(dashboard.checked, records)
        return api([c.as_dict() for c in checked])  # the fields of `deployctl history -o json`

    async def attempt_record(request: web.Request) -> Any:
        raw = request.match_info["id"]
        found = await data(dashboard.attempt, request.match_info["app"], int(raw)) if raw.isdigit() else None
        if found is None:
            raise web.HTTPNotFound(text=f"no attempt {raw} of {request.match_info['app']}")
        return found

    async def attempt_html(request: web.Request) -> web.StreamResponse:
        checked, events = await attempt_record(request)  # what happened then, not the workload's state now
        return await page(request, "attempt.html", record=checked.record, unverified=checked.unverified,
                          event=checked.as_dict(), events=events)

    async def attempt_api(request: web.Request) -> web.StreamResponse:
        checked, events = await attempt_record(request)
        return api(checked.with_events(events))  # the fields of `deployctl history --id N -o json`

    def _window(request: web.Request) -> dict[str, Any]:
        now = datetime.now(UTC)
        since, until = _param(request, "since"), _param(request, "until")
        return {"env": _param(request, "env") or None, "app": _param(request, "app") or None,
                "since": parse_when(since, now=now) if since else None,
                "until": parse_when(until, now=now) if until else None}

    async def timeline_html(request: web.Request) -> web.StreamResponse:
        window = _window(request)
        records = await data(dashboard.records, limit=2000, **window)
        unverified = {c.record.id: c.unverified for c in await data(dashboard.checked, records) if c.unverified}
        verifications = await data(dashboard.verifications, records)
        figure = None
        # The operator's --overlay, drawn unless the reader turns it off (?overlay=off); a request never names a source.
        offered = dashboard.overlay is not None
        overlay_on = offered and _param(request, "overlay") != "off"
        overlay_error = None
        if plotly_js() is not None:
            from deployctl.views.timeline import build_figure

            series, span = None, None
            if overlay_on:
                try:
                    series, span = await data(dashboard.overlay_series, records, since=window["since"],
                                              until=window["until"])
                except DeployctlError as exc:  # the deploys are still worth showing without the metric
                    overlay_error = str(exc)
            fig = await data(build_figure, records, title="Deploys", overlay=series, time_range=span,
                             unverified=unverified, verifications=verifications)
            figure = json.loads(fig.to_json())
        _, snapshot = await data(dashboard.current)
        filters = {k: _param(request, k) for k in ("env", "app", "since", "until")}
        return await page(request, "timeline.html", figure=figure, records=records, unverified=unverified,
                          all=snapshot, filters=filters, verified=_latest(verifications),
                          overlay_offered=offered, overlay_on=overlay_on, overlay_error=overlay_error,
                          overlay_name=dashboard.overlay.query or dashboard.overlay.spec if dashboard.overlay else "")

    async def timeline_api(request: web.Request) -> web.StreamResponse:
        records = await data(dashboard.records, limit=2000, **_window(request))
        verified = _latest(await data(dashboard.verifications, records))
        return api([_with_verification(c.as_dict(), verified.get(c.record.id))  # as `history -o json`
                    for c in await data(dashboard.checked, records)])

    async def static_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "plotly.min.js":
            path = plotly_js()
            if path is None:
                raise web.HTTPNotFound(text="plotly is not installed (pip install 'deployctl[timeline]')")
            return web.FileResponse(path, headers={"Content-Type": "text/javascript",
                                                   "Cache-Control": "public, max-age=86400"})
        item = static / name
        suffix = Path(name).suffix
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES or not item.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=item.read_bytes(), headers={"Content-Type": STATIC_TYPES[suffix],
                                                              "Cache-Control": "public, max-age=300"})

    routes: list[tuple[str, Handler]] = [
        ("/ui/", matrix_page),
        ("/ui/fragment/matrix", matrix_fragment),
        ("/ui/apps/{app}", app_html),
        ("/ui/apps/{app}/attempts/{id}", attempt_html),
        ("/ui/timeline", timeline_html),
        ("/ui/static/{name}", static_file),
        ("/api/v1/status", status_api),
        ("/api/v1/apps/{app}", app_api),
        ("/api/v1/apps/{app}/history", history_api),
        ("/api/v1/apps/{app}/attempts/{id}", attempt_api),
        ("/api/v1/timeline", timeline_api),
    ]
    for path, handler in routes:
        app.router.add_get(path, guarded(handler))

    async def to_ui(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    app.router.add_get("/ui", to_ui)


def make_app(dashboard: Dashboard, auth: UiAuth) -> web.Application:
    """The standalone dashboard (``deployctl ui``): ``/`` leads to ``/ui/``; ``/healthz`` for probes."""
    app = web.Application(client_max_size=64 * 1024)
    add_routes(app, dashboard, auth)

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    app.router.add_get("/", root)
    app.router.add_get("/healthz", healthz)
    return app


async def run(app: web.Application, host: str, port: int, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until SIGINT (Ctrl-C) or SIGTERM, then close the listener."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    shown = f"[{host}]" if ":" in host else host
    actual = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        actual = server.sockets[0].getsockname()[1]
    if on_ready is not None:
        on_ready(f"http://{shown}:{actual}/ui/")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    log.info("ui.stopped")
