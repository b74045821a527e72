"""Pinned versions of the local control plane. Changing any of them triggers a rebuild."""

from __future__ import annotations

import hashlib
import json

KUBERNETES = "v1.35.4"
# etcd is whatever k8s.io/kubernetes requires (v3.6.5 for v1.35.4); it is built from that module graph.
KWOK = "v0.8.0"
GO_DIRECTIVE = "1.25.0"
# Bump to force a rebuild when the build recipe itself changes.
RECIPE = 2  # 2: kubectl is built too


def as_dict() -> dict[str, object]:
    return {"kubernetes": KUBERNETES, "kwok": KWOK, "go": GO_DIRECTIVE, "recipe": RECIPE}


def cache_key() -> str:
    """A short, stable directory name for the current pins."""
    digest = hashlib.sha256(json.dumps(as_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"k8s-{KUBERNETES}-kwok-{KWOK}-{digest}"
