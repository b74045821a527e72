"""Registry authentication challenges (``WWW-Authenticate``), parsed purely."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a scheme (lowercase) and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")


_TOKEN68 = re.compile(r"\s*([A-Za-z0-9._~+/-]+=*)\s*(?:,|$)")
_AUTH_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*')
_SCHEME = re.compile(r"\s*,*\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$|(?=,))")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into challenges (RFC 7235 syntax, quoted strings unescaped)."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        match = _SCHEME.match(header, pos)
        if match is None:
            break
        scheme, pos = match.group(1).lower(), match.end()
        params: dict[str, str] = {}
        token68 = _TOKEN68.match(header, pos)
        if token68 is not None:
            pos = token68.end()
        while token68 is None and pos < len(header):
            param = _AUTH_PARAM.match(header, pos)
            if param is None:
                break
            name, quoted, bare = param.groups()
            params[name.lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            pos = param.end()
            if pos < len(header) and header[pos] == ",":
                pos += 1
                continue
            break
        challenges.append(Challenge(scheme, params))
        while pos < len(header) and header[pos] in " ,":
            pos += 1
    return challenges


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer if offered, else Basic, else None."""
    by_scheme = {c.scheme: c for c in challenges}
    return by_scheme.get("bearer") or by_scheme.get("basic")


def repository_scope(repository: str) -> str:
    return f"repository:{repository}:pull"
