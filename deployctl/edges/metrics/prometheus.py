"""A Prometheus range query (``/api/v1/query_range``) as metric series for the timeline overlay.

One GET with a total deadline and a bounded answer; the URL's credentials (``user:pass@``) are
sent as basic auth to that host only, and never printed.
"""

from __future__ import annotations

import base64
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

import structlog

from deployctl import __version__
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.metric import MetricSeries, Overlay

log = structlog.get_logger(__name__)

MAX_BYTES = 32 * 1024 * 1024
TARGET_POINTS = 500


class PrometheusError(DeployctlError):
    """Prometheus could not be asked or refused the query."""


def step_for(start: datetime, end: datetime, *, points: int = TARGET_POINTS) -> float:
    """A query step giving about ``points`` points over the range (at least 1 s)."""
    return max(1.0, math.ceil((end - start).total_seconds() / points))


def query_range(
    base_url: str, query: str, *, start: datetime, end: datetime, step: float | None = None, timeout: float = 30.0
) -> Overlay:
    """Every series ``query`` returns between ``start`` and ``end``."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"--overlay prometheus=URL: give http(s)://host:port, not {base_url!r}")
    if not query.strip():
        raise InvalidInputError("--overlay prometheus=URL needs --query 'PROMQL'")
    if end <= start:
        raise InvalidInputError("the overlay's time range is empty: give --since (and --until)")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc += f":{parts.port}" if parts.port else ""
    params = urllib.parse.urlencode(
        {"query": query, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
         "step": f"{step or step_for(start, end):g}"}
    )  # fmt: skip
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/api/v1/query_range", params, ""))
    headers = {"Accept": "application/json", "User-Agent": f"deployctl/{__version__}"}
    if parts.username is not None:
        secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    where = f"{parts.scheme}://{netloc}"
    body = _get(url, headers=headers, timeout=timeout, where=where)
    try:
        answer = json.loads(body)
    except ValueError as exc:
        raise PrometheusError(f"{where}: the answer is not JSON; is this the Prometheus URL?") from exc
    if not isinstance(answer, dict) or answer.get("status") != "success":
        error = answer.get("error") if isinstance(answer, dict) else None
        raise PrometheusError(f"{where}: query refused: {str(error or 'unexpected answer')[:300]}")
    data = answer.get("data") or {}
    if data.get("resultType") != "matrix":
        raise PrometheusError(f"{where}: expected a range vector (matrix), got {data.get('resultType')!r}")
    series = []
    for item in data.get("result") or []:
        labels = item.get("metric") or {}
        name = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or labels.get(
            "__name__", query
        )
        times, values = [], []
        for stamp, value in item.get("values") or []:
            number = float(value)
            if math.isfinite(number):
                times.append(datetime.fromtimestamp(float(stamp), tz=UTC))
                values.append(number)
        series.append(MetricSeries(str(name), tuple(times), tuple(values)))
    log.info("prometheus.queried", url=where, series=len(series), points=sum(len(s.values) for s in series))
    return Overlay(title=query, series=tuple(series))


def _get(url: str, *, headers: dict[str, str], timeout: float, where: str) -> bytes:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers=headers, method="GET")  # noqa: S310 - http(s) checked above
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            while chunk := response.read(65536):
                size += len(chunk)
                if size > MAX_BYTES:
                    raise PrometheusError(f"{where}: the answer is larger than {MAX_BYTES // 2**20} MiB")
                if time.monotonic() > deadline:
                    raise PrometheusError(f"{where}: no complete answer within {timeout:.0f}s")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = str(json.loads(exc.read(65536)).get("error", ""))
        except (ValueError, AttributeError, OSError):
            pass
        raise PrometheusError(f"{where}: HTTP {exc.code} {exc.reason}: {detail[:300]}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusError(f"cannot reach {where}: {getattr(exc, 'reason', exc)}") from exc
    return b"".join(chunks)
