"""Container image references: parse and format ``registry/repository:tag@digest``.

Pure: no external calls or any I/O. Follows the grammar of the distribution ``reference``
package (what ``docker pull`` accepts), with Docker Hub defaults: ``nginx`` is
``docker.io/library/nginx``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from deployctl.errors import InvalidInputError

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\]"
)
_PORT = re.compile(r"[0-9]{1,5}")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_MAX_NAME_LENGTH = 255
_LONG_HEX_TAG = re.compile(r"[0-9a-f]{12,}")


class InvalidImageRefError(InvalidInputError):
    """An image reference does not follow ``[registry/]repository[:tag][@digest]``."""


@dataclass(frozen=True)
class ImageRef:
    """A parsed, normalised image reference; ``str()`` gives the fully qualified form."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> ImageRef:
        """The same reference pinned to ``digest`` (the tag is kept for readers)."""
        _check_digest(digest, text=f"{self}@{digest}")
        return replace(self, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def manifest_reference(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag (``latest`` if none)."""
        return self.digest or self.tag or DEFAULT_TAG

    def familiar(self) -> str:
        """The short form a person writes: ``nginx:1.25`` for ``docker.io/library/nginx:1.25``."""
        text = self.name
        if self.registry == DEFAULT_REGISTRY:
            text = self.repository
            if text.startswith("library/") and text.count("/") == 1:
                text = text.removeprefix("library/")
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def display(self) -> str:
        """The familiar form with a commit-SHA-like tag and any digest shortened, for messages."""
        text = self.familiar().split("@", 1)[0]
        if self.tag is not None and _LONG_HEX_TAG.fullmatch(self.tag):
            text = text[: -len(self.tag)] + self.tag[:8] + "…"
        if self.digest is not None:
            text += f"@{short_digest(self.digest)}"
        return text


def short_digest(digest: str) -> str:
    """``sha256:0123456789ab…`` for messages."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}…" if len(hexpart) > 12 else digest


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``[registry[:port]/]repository[:tag][@digest]``; raise InvalidImageRefError saying why not."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidImageRefError("empty image reference; write e.g. registry.example.com/shop/web:<tag>")
    if text != text.strip():
        raise InvalidImageRefError(f"image reference {text!r} has leading or trailing whitespace")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        _check_digest(digest, text=text)
    registry, path = _split_registry(remainder)
    tag = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidImageRefError(
                f"image reference {text!r} has an invalid tag {tag!r}; a tag is up to 128 letters, "
                "digits, '_', '.' or '-' and does not start with '.' or '-'"
            )
    if not path:
        raise InvalidImageRefError(f"image reference {text!r} has no repository name")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component:
                reason = "repository names must be lowercase"
            elif not component:
                reason = "it has an empty path component (a doubled or trailing '/')"
            else:
                reason = f"{component!r} is not a valid path component (a-z, 0-9, '.', '_', '-')"
            raise InvalidImageRefError(f"image reference {text!r}: {reason}")
    if registry is None or registry in _DOCKER_HUB_ALIASES:
        registry = DEFAULT_REGISTRY
        if "/" not in path:
            path = f"library/{path}"
    if len(registry) + 1 + len(path) > _MAX_NAME_LENGTH:
        raise InvalidImageRefError(
            f"image reference {text!r}: the name is longer than {_MAX_NAME_LENGTH} characters"
        )
    return ImageRef(registry=registry, repository=path, tag=tag, digest=digest)


def _split_registry(remainder: str) -> tuple[str | None, str]:
    """Split off the registry host: the first component if it has a '.', a ':' or is 'localhost'."""
    first, slash, rest = remainder.partition("/")
    if not slash:
        return None, remainder
    if not ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return None, remainder
    host, port = first, None
    if first.startswith("["):
        end = first.find("]")
        host, port = first[: end + 1], (first[end + 2 :] if first[end + 1 : end + 2] == ":" else None)
        if end < 0 or (first[end + 1 :] and port is None):
            raise InvalidImageRefError(f"image reference {remainder!r}: invalid registry host {first!r}")
    elif ":" in first:
        host, port = first.split(":", 1)
    if not _DOMAIN.fullmatch(host) or (port is not None and not _PORT.fullmatch(port)):
        raise InvalidImageRefError(f"image reference {remainder!r}: invalid registry host {first!r}")
    return first.lower(), rest


def _check_digest(digest: str, *, text: str) -> None:
    if not _DIGEST.fullmatch(digest):
        raise InvalidImageRefError(
            f"image reference {text!r} has an invalid digest {digest!r}; write sha256:<64 hex>"
        )
    algorithm, hexpart = digest.split(":", 1)
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is not None and (len(hexpart) != expected or not re.fullmatch(r"[0-9a-f]+", hexpart)):
        raise InvalidImageRefError(
            f"image reference {text!r}: a {algorithm} digest is {expected} lowercase hex digits, "
            f"got {hexpart!r}"
        )
