"""Notification sinks: the settings file (`notify:`) parsed into typed sinks, refused with a clear error when malformed."""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deployctl import settings
from deployctl.edges.events.envelope import MODES
from deployctl.edges.events.kafka import (
    KAFKA_KEYS,
    KafkaTarget,
    parse_target,
)
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.redact import redact

SETTINGS_ENV = settings.SETTINGS_FILE.name


SINK_TYPES = ("webhook", "slack", "kafka")


FORMATS = ("json", "cdevents")


_SINK_KEYS = {"type", "url", "url_env", "secret_env", "name", "max_attempts", "timeout_seconds"}


_EVENT_KEYS = {"format", "mode", "source", "repo"}


class NotifyError(DeployctlError):
    """Some notifications could not be delivered."""


@dataclass(frozen=True)
class Sink:
    """One place notifications go."""

    type: str
    name: str
    """Stable identity in the delivery log; never contains the URL (which may be secret)."""
    url: str | None = None
    url_env: str | None = None
    secret_env: str | None = None
    max_attempts: int = 8
    timeout_seconds: float = 10.0
    format: str = "json"
    """``json`` (the flat export shape) or ``cdevents`` (CloudEvents 1.0, docs/analytics.md)."""
    mode: str = "structured"
    """CloudEvents content mode: ``structured`` or ``binary``."""
    source: str = "/deployctl"
    """The CloudEvents/CDEvents ``source`` of the events."""
    repo: str | None = None
    """The deploy repo's name, carried in the CDEvents extension."""
    kafka: KafkaTarget | None = None

    def resolve_url(self, environ: Mapping[str, str]) -> str:
        url = self.url or environ.get(self.url_env or "", "")
        if not url:
            raise InvalidInputError(
                f"notify sink {self.name!r}: environment variable {self.url_env} is not set"
            )
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise InvalidInputError(f"notify sink {self.name!r}: the URL must start with http:// or https://")
        return url

    def secret(self, environ: Mapping[str, str]) -> bytes | None:
        if self.secret_env is None:
            return None
        value = environ.get(self.secret_env)
        if not value:
            raise InvalidInputError(
                f"notify sink {self.name!r}: environment variable {self.secret_env} (secret_env) is not set"
            )
        return value.encode()


@dataclass(frozen=True)
class NotifySettings:
    sinks: tuple[Sink, ...] = ()


def parse_settings(data: object, *, source: str) -> NotifySettings:
    """Validate the ``notify:`` list of a settings document; other top-level keys are not ours."""
    if data is None:
        return NotifySettings()
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{source}: settings must be a mapping with a 'notify:' list")
    entries = data.get("notify") or []
    if not isinstance(entries, list):
        raise InvalidInputError(f"{source}: 'notify' must be a list of sinks")
    sinks: list[Sink] = []
    for index, entry in enumerate(entries):
        where = f"{source}: notify[{index}]"
        if not isinstance(entry, Mapping):
            raise InvalidInputError(f"{where}: must be a mapping like {{type: webhook, url: https://...}}")
        kind = entry.get("type")
        allowed = _SINK_KEYS | _EVENT_KEYS
        if kind == "kafka":
            allowed = (allowed - {"url", "url_env", "secret_env"}) | KAFKA_KEYS
        unknown = set(entry) - allowed
        if unknown:
            raise InvalidInputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if kind not in SINK_TYPES:
            raise InvalidInputError(f"{where}: type must be one of {', '.join(SINK_TYPES)}, not {kind!r}")
        url, url_env = entry.get("url"), entry.get("url_env")
        kafka = parse_target(entry, where=where) if kind == "kafka" else None
        if kafka is None and (url is None) == (url_env is None):
            raise InvalidInputError(f"{where}: give exactly one of url or url_env")
        fmt, mode, source = _event_options(entry, kind=str(kind), where=where)
        if url is not None:
            scheme = urllib.parse.urlsplit(str(url)).scheme
            if scheme not in ("http", "https"):
                raise InvalidInputError(f"{where}: url must be http(s)://..., not {redact(str(url))!r}")
        max_attempts = entry.get("max_attempts", 8)
        timeout = entry.get("timeout_seconds", 10.0)
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise InvalidInputError(f"{where}: max_attempts must be a positive integer")
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInputError(f"{where}: timeout_seconds must be a positive number")
        identity = kafka.topic if kafka else url_env or hashlib.sha256(str(url).encode()).hexdigest()[:12]
        name = str(entry.get("name") or f"{kind}:{identity}")
        if name in {s.name for s in sinks}:
            raise InvalidInputError(f"{where}: a second sink named {name!r}; give each a distinct name")
        sinks.append(
            Sink(
                type=str(kind),
                name=name,
                url=None if url is None else str(url),
                url_env=None if url_env is None else str(url_env),
                secret_env=entry.get("secret_env"),
                max_attempts=max_attempts,
                timeout_seconds=float(timeout),
                format=fmt,
                mode=mode,
                source=source,
                repo=None if entry.get("repo") is None else str(entry["repo"]),
                kafka=kafka,
            )
        )
    return NotifySettings(sinks=tuple(sinks))


def _event_options(entry: Mapping[str, Any], *, kind: str, where: str) -> tuple[str, str, str]:
    """``format``, ``mode`` and ``source`` of one sink entry (Kafka defaults to CDEvents)."""
    fmt = entry.get("format", "cdevents" if kind == "kafka" else "json")
    if fmt not in FORMATS or (kind == "slack" and fmt != "json"):
        raise InvalidInputError(f"{where}: format must be one of {', '.join(FORMATS)} (slack: json only)")
    mode = entry.get("mode", "structured")
    if mode not in MODES:
        raise InvalidInputError(f"{where}: mode must be one of {', '.join(MODES)}")
    source = entry.get("source", "/deployctl")
    if not isinstance(source, str) or not source or any(c.isspace() for c in source):
        raise InvalidInputError(f"{where}: source must be a URI reference like /deployctl/acme-deploy")
    return str(fmt), str(mode), source


def load_settings(path: str | Path | None = None) -> NotifySettings:
    """Settings from ``path``, else ``$DEPLOYCTL_SETTINGS``; no file configured means no sinks."""
    chosen = path or os.environ.get(SETTINGS_ENV)
    if not chosen:
        return NotifySettings()
    file = Path(chosen)
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise InvalidInputError(f"{file}: cannot read settings: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{file}: not valid YAML: {exc}") from exc
    return parse_settings(data, source=str(file))
