"""Kubeconfig files, merged the way kubectl merges them (every file of ``KUBECONFIG``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from deployctl.errors import ClusterUnreachableError

__all__ = ["MAX_KUBECONFIG_BYTES", "current_context", "kubeconfig_paths", "merged_kubeconfig"]

MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024
_SECTIONS = ("clusters", "contexts", "users")
_FILE_KEYS = {"cluster": ("certificate-authority",), "user": ("client-certificate", "client-key", "tokenFile")}


def kubeconfig_paths(value: str | None) -> list[Path]:
    """The files of a KUBECONFIG value (os.pathsep-separated; empty parts ignored), else ~/.kube/config."""
    value = value if value is not None else os.environ.get("KUBECONFIG")
    parts = [p for p in (value or "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in parts] or [Path("~/.kube/config").expanduser()]


def merged_kubeconfig(value: str | None) -> dict[str, Any]:
    """Every file of a KUBECONFIG value merged the way kubectl merges them: the first file that names a
    cluster, context or user wins; the first ``current-context`` wins; a file that does not exist is skipped;
    relative certificate paths are resolved against the file that holds them."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", **{s: [] for s in _SECTIONS}}
    seen: dict[str, set[str]] = {s: set() for s in _SECTIONS}
    found = False
    for path in kubeconfig_paths(value):
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KUBECONFIG_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ClusterUnreachableError(f"cannot read kubeconfig {path}: {exc}") from exc
        if len(data) > MAX_KUBECONFIG_BYTES:
            raise ClusterUnreachableError(f"kubeconfig {path} is larger than {MAX_KUBECONFIG_BYTES} bytes")
        try:
            doc = yaml.safe_load(data) or {}
        except yaml.YAMLError as exc:
            raise ClusterUnreachableError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise ClusterUnreachableError(f"kubeconfig {path} is not a mapping")
        found = True
        if doc.get("current-context") and not merged.get("current-context"):
            merged["current-context"] = doc["current-context"]
        for section in _SECTIONS:
            for item in doc.get(section) or []:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise ClusterUnreachableError(f"kubeconfig {path}: an entry of {section} has no name")
                if item["name"] in seen[section]:
                    continue
                seen[section].add(item["name"])
                merged[section].append(_absolute_paths(item, section[:-1], path.parent))
    if not found:
        raise ClusterUnreachableError(
            "no kubeconfig found (" + ", ".join(str(p) for p in kubeconfig_paths(value)) + ")")
    return merged


def _absolute_paths(item: dict[str, Any], kind: str, base: Path) -> dict[str, Any]:
    body = item.get(kind)
    if not isinstance(body, dict):
        return item
    body = dict(body)
    for key in _FILE_KEYS.get(kind, ()):
        value = body.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            body[key] = str(base / value)
    return {**item, kind: body}


def current_context(kubeconfig: str | None) -> str | None:
    """The current context of the merged kubeconfig (None in a pod without one)."""
    try:
        return merged_kubeconfig(kubeconfig).get("current-context") or None
    except ClusterUnreachableError:
        return None
