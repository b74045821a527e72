"""Registry answers as values: manifest media types, a ``Resolution`` per image reference, retag checks."""

from __future__ import annotations

import json
from dataclasses import dataclass

from deployctl.model.imageref import InvalidImageRefError, parse_image_ref, short_digest
from deployctl.model.vocabulary import ImageStatus

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
_MAX_DETAIL = 200
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

Status = ImageStatus


@dataclass(frozen=True)
class Resolution:
    """What the registry said about one image reference."""

    reference: str
    status: Status
    digest: str | None = None
    media_type: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", ImageStatus(self.status))  # a plain word from a caller becomes one

    @property
    def found(self) -> bool:
        return self.status is ImageStatus.FOUND

    def pinned(self) -> str:
        """The reference as written, pinned to the resolved digest: ``shop/web:<sha>@sha256:...``."""
        if self.digest is None:
            raise ValueError(f"{self.reference} was not resolved ({self.status}); there is no digest to pin")
        return parse_image_ref(self.reference).with_digest(self.digest).familiar()


def check_retagged(
    expected_digest: str, resolution: Resolution, *, tested_in: str | None = None
) -> str | None:
    """A message if the tag now points to a different manifest than ``expected_digest``, else None.

    Only a found resolution can disagree; missing/unreachable are reported by their own messages.
    """
    if not resolution.found or resolution.digest == expected_digest:
        return None
    where = f"in {tested_in}" if tested_in else "when it was tested"
    try:
        shown = parse_image_ref(resolution.reference).display()
    except InvalidImageRefError:
        shown = resolution.reference
    return (
        f"{shown} now points to {short_digest(resolution.digest or '')}, not {short_digest(expected_digest)} "
        f"which ran {where}: the artifact changed after it was tested (was the tag re-pushed?). "
        "Deploy the tested digest, or pass --allow-retagged to accept the new one"
    )


def error_detail(body: bytes) -> str:
    """``: <message>`` from a distribution error body, or nothing."""
    try:
        errors = json.loads(body).get("errors") or []
        message = errors[0].get("message") or errors[0].get("code")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    if not isinstance(message, str) or not message:
        return ""
    shown = "".join(c if c.isprintable() else "?" for c in message[:_MAX_DETAIL])
    return f": {shown}" + ("…" if len(message) > _MAX_DETAIL else "")
