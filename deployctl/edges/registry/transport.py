"""Where the registry edge connects, and which URLs may receive a registry credential (pure).

The HTTP itself is :mod:`deployctl.edges.http` (total deadlines, bounded bodies, proxies, keep-alive).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection

from deployctl.edges.http import is_loopback, same_origin
from deployctl.edges.registry.credentials import DOCKER_HUB

_DOCKER_HUB_API = "registry-1.docker.io"
USER_AGENT = "deployctl-registry/0.1"


def api_base_url(registry: str, *, insecure_registries: Collection[str] = ()) -> str:
    """Where a registry's API lives: plain http for loopback and listed insecure hosts, else https."""
    api_host = _DOCKER_HUB_API if registry == DOCKER_HUB else registry
    plain = registry in insecure_registries or registry.rsplit(":", 1)[0] in insecure_registries
    scheme = "http" if plain or is_loopback(registry) else "https"
    return f"{scheme}://{api_host}"


def realm_may_receive_credentials(realm: str) -> bool:
    """A token realm gets the registry's credential only over https (plain http only on loopback)."""
    parts = urllib.parse.urlsplit(realm)
    scheme = parts.scheme.lower()
    return scheme == "https" or (scheme == "http" and is_loopback(parts.hostname or ""))


def answered_by_registry(response_url: str, base_url: str) -> bool:
    """Whether an answer came from the registry itself (not from a host a redirect led to)."""
    return same_origin(response_url, base_url)


def safe_url(url: str) -> str:
    """A URL without its query or userinfo, fit for messages."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
