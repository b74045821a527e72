"""Prometheus, read: a range query (``/api/v1/query_range``) as series for the timeline overlay, and the
instant queries and firing alerts that verify a deploy (:class:`Prometheus`).

Every call goes through the one outbound HTTP client (:mod:`deployctl.edges.http`): a total deadline, a
bounded answer, no redirects followed. The URL's credentials (``user:pass@``) or a bearer token are
sent to that host only, and never printed.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from deployctl import __version__
from deployctl.edges.http import HttpClient, HttpError, ResponseTooLarge
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.metric import MetricSeries, Overlay

log = structlog.get_logger(__name__)

MAX_BYTES = 32 * 1024 * 1024
VERIFY_MAX_BYTES = 1024 * 1024
TARGET_POINTS = 500
_HTTP = HttpClient(user_agent=f"deployctl/{__version__}")


class PrometheusError(DeployctlError):
    """Prometheus could not be asked or refused the query."""


class PrometheusUnreachable(PrometheusError):
    """No answer from Prometheus: refused connection, DNS, TLS, or past the deadline."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant query: its labels and value."""

    labels: Mapping[str, str]
    value: float


class Prometheus:
    """One Prometheus server: its base URL and credentials (bound to its host), a deadline and a size bound
    per call. Thread-safe."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 10.0,
                 max_bytes: int = VERIFY_MAX_BYTES, client: HttpClient | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError("the Prometheus URL must be http(s)://host:port[/prefix]")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc += f":{parts.port}" if parts.port else ""
        self.where = f"{parts.scheme}://{netloc}"
        self._base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._headers = {"Accept": "application/json"}
        if parts.username is not None:
            secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        elif token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._client = client or _HTTP

    def get(self, path: str, params: Mapping[str, str]) -> Any:
        """The ``data`` of a successful API answer; PrometheusError (or PrometheusUnreachable) otherwise."""
        url = f"{self._base}{path}?{urllib.parse.urlencode(params)}"
        try:
            response = self._client.request("GET", url, headers=self._headers, deadline=self.timeout,
                                            max_bytes=self.max_bytes)
        except ResponseTooLarge as exc:
            raise PrometheusError(f"{self.where}: the answer is larger than {self.max_bytes} bytes") from exc
        except HttpError as exc:
            raise PrometheusUnreachable(f"cannot reach {self.where}: {exc}") from exc
        try:
            answer = json.loads(response.body)
        except ValueError as exc:
            raise PrometheusError(
                f"{self.where}: HTTP {response.status}, and the answer is not JSON; is this the Prometheus URL?"
            ) from exc
        if response.status != 200 or not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else None
            raise PrometheusError(f"{self.where}: HTTP {response.status}: query refused: "
                                  f"{str(error or 'unexpected answer')[:300]}")
        return answer.get("data") or {}

    def instant(self, query: str, *, at: datetime | None = None) -> list[Sample]:
        """The value of every series ``query`` returns (a scalar is one series without labels)."""
        params = {"query": query}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = self.get("/api/v1/query", params)
        kind = data.get("resultType") if isinstance(data, dict) else None
        result = data.get("result") if isinstance(data, dict) else None
        try:
            if kind == "scalar":
                return [Sample({}, float(result[1]))]  # type: ignore[index]
            if kind == "vector":
                return [Sample({str(k): str(v) for k, v in (item.get("metric") or {}).items()},
                               float(item["value"][1])) for item in result or ()]
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise PrometheusError(f"{self.where}: an answer of an unexpected shape") from exc
        raise PrometheusError(f"{self.where}: expected an instant vector or a scalar, got {kind!r}; "
                              "a verification query must not be a range vector")

    def firing_alerts(self, name: str) -> list[Mapping[str, str]]:
        """The labels of every firing alert named ``name``."""
        data = self.get("/api/v1/alerts", {})
        alerts = data.get("alerts") if isinstance(data, dict) else None
        if not isinstance(alerts, list):
            raise PrometheusError(f"{self.where}: an alerts answer of an unexpected shape")
        out: list[Mapping[str, str]] = []
        for alert in alerts:
            labels = alert.get("labels") if isinstance(alert, dict) else None
            if isinstance(labels, dict) and labels.get("alertname") == name and alert.get("state") == "firing":
                out.append({str(k): str(v) for k, v in labels.items()})
        return out


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
    server = Prometheus(base_url, timeout=timeout, max_bytes=MAX_BYTES)
    params = {"query": query, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}",
              "step": f"{step or step_for(start, end):g}"}
    data = server.get("/api/v1/query_range", params)
    if data.get("resultType") != "matrix":
        raise PrometheusError(f"{server.where}: expected a range vector (matrix), got {data.get('resultType')!r}")
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
    log.info("prometheus.queried", url=server.where, series=len(series), points=sum(len(s.values) for s in series))
    return Overlay(title=query, series=tuple(series))
