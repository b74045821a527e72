"""Deploy outcomes as CDEvents (the CD Foundation's event vocabulary, spec v0.4.1): pure building.

An outcome in which an app now runs a new SHA is one ``service`` event:

- ``service.deployed``  the first deploy of the app to the environment (no previous SHA);
- ``service.rolledback`` a rollback-forward: the deploy-file commit written by ``deployctl rollback``
  (its summary starts ``Roll back <app> in <env> to``);
- ``service.upgraded``  any other new SHA.

Outcomes in which nothing was deployed (failed, blocked, refused, interrupted) are not service
events: :func:`cdevent` returns None for them. deployctl's own fields (repo, deploy commit, SHA,
digest, author, approvers, commit message, result, duration) travel in the event's ``customData``
under the ``dev.deployctl`` key, described by the JSON Schemas in ``deployctl/model/schemas`` and
in docs/analytics.md. Everything here works on the flat export shape of
:func:`deployctl.model.audit.record_to_event`, which is also what the notification outbox holds.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from deployctl.model.audit import AuditRecord, record_to_event
from deployctl.model.vocabulary import RAN

SPEC_VERSION = "0.4.1"
"""The CDEvents specification version our events follow (``context.version``)."""
SERVICE_EVENT_VERSION = "0.2.0"
"""The version of the ``service`` event types in that specification."""
PREDICATES = ("deployed", "upgraded", "rolledback")
EXTENSION_KEY = "dev.deployctl"
"""The ``customData`` key holding deployctl's own fields."""
EXTENSION_VERSION = 1
"""Version of the fields under EXTENSION_KEY; bumped only on incompatible change."""
DEPLOYED_RESULTS = RAN
"""Outcomes after which the app runs ``new_sha``: the only ones that are service events."""

_EVENT_ID_NAMESPACE = uuid.UUID("6f1d3c2e-5b8a-4e0f-9d47-2c1a8b3e7f60")
"""Fixed forever: changing it changes every deploy's event id."""

_ROLLBACK_SUMMARY = re.compile(r"^Roll back \S+ in \S+ to [0-9a-f]{7,40}\b")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def deploy_event_id(event: Mapping[str, Any]) -> str:
    """The id of an exported attempt's deploy event, derived from the attempt alone: the same over every
    sink (webhook, Kafka), on every retry and in ``deployctl events export --format cdevents``, so a consumer
    dedupes by it. Built from the attempt id, env, app, new SHA and start time, so that two stores (or a
    store recreated from scratch) do not give two different deploys the same id."""
    parts = (event.get("id"), event.get("env"), event.get("app"), event.get("new_sha"), event.get("started_at"))
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, "\x1f".join("" if p is None else str(p) for p in parts)))


def event_type(predicate: str) -> str:
    """The CDEvents type string of a service predicate, e.g. ``dev.cdevents.service.deployed.0.2.0``."""
    if predicate not in PREDICATES:
        raise ValueError(f"not a service predicate: {predicate!r}")
    return f"dev.cdevents.service.{predicate}.{SERVICE_EVENT_VERSION}"


def predicate(event: Mapping[str, Any]) -> str | None:
    """Which service event an exported attempt is, or None when it deployed nothing."""
    if event.get("result") not in DEPLOYED_RESULTS:
        return None
    if not event.get("previous_sha"):
        return "deployed"
    if _ROLLBACK_SUMMARY.match(str(event.get("file_commit_summary") or "")):
        return "rolledback"
    return "upgraded"


def package_url(image: str, digest: str | None) -> str:
    """The package URL (purl, type ``oci``) of an image pinned by digest.

    ``registry.example.com/shop/web:tag`` with ``sha256:ab..`` becomes
    ``pkg:oci/web@sha256%3Aab..?repository_url=registry.example.com/shop/web``; without a digest
    the tag is the version (``pkg:oci/web@tag?...``), as the purl spec allows.
    """
    repository, tag = _split_image(image)
    name = repository.rsplit("/", 1)[-1]
    version = digest if digest and _DIGEST.match(digest) else tag
    purl = f"pkg:oci/{urllib.parse.quote(name, safe='')}"
    if version:
        purl += "@" + urllib.parse.quote(version, safe="")
    return purl + "?repository_url=" + urllib.parse.quote(repository, safe="/:.-_")


def _split_image(image: str) -> tuple[str, str | None]:
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        return ref[: len(ref) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
    return ref, None


def extension(event: Mapping[str, Any]) -> dict[str, Any]:
    """deployctl's own fields of an exported attempt (``customData["dev.deployctl"]``)."""
    summary = event.get("app_commit_summary")
    return {
        "version": EXTENSION_VERSION,
        "attemptId": event.get("id"),
        "repo": event.get("repo"),
        "deployCommit": event.get("deploy_commit"),
        "deployFile": event.get("deploy_file"),
        "env": event.get("env"),
        "app": event.get("app"),
        "namespace": event.get("namespace"),
        "sha": event.get("new_sha"),
        "previousSha": event.get("previous_sha"),
        "image": event.get("image"),
        "digest": event.get("digest"),
        "author": event.get("file_author"),
        "approvers": list(dict.fromkeys([*(event.get("reviewers") or []),
                                         *(a.get("who") for a in event.get("approvals") or [])])),
        "pullRequest": event.get("pull_request"),
        "approvals": list(event.get("approvals") or []),
        "commitMessage": str(summary).splitlines()[0] if summary else None,
        "result": event.get("result"),
        "startedAt": event.get("started_at"),
        "finishedAt": event.get("finished_at"),
        "durationSeconds": event.get("duration_seconds"),
        "trigger": event.get("trigger"),
        "actor": event.get("actor_user"),
        "ciJob": event.get("actor_ci_job"),
    }


def cdevent(event: Mapping[str, Any], *, source: str) -> dict[str, Any] | None:
    """The CDEvent (``context``, ``subject``, ``customData``) of an exported attempt, or None.

    ``source`` names this deployctl (a URI reference, e.g. ``/deployctl/acme-deploy``); the
    event id is :func:`deploy_event_id` of the attempt (the same on every sink, retry and export).
    """
    chosen = predicate(event)
    if chosen is None:
        return None
    env, app = str(event.get("env")), str(event.get("app"))
    ident = deploy_event_id(event)
    return {
        "context": {
            "version": SPEC_VERSION,
            "id": ident,
            "source": source,
            "type": event_type(chosen),
            "timestamp": event.get("finished_at") or event.get("started_at"),
        },
        "subject": {
            "id": f"{env}/{app}",
            "source": source,
            "type": "service",
            "content": {
                "environment": {"id": env, "source": source},
                "artifactId": package_url(str(event.get("image") or ""), event.get("digest")),
            },
        },
        "customDataContentType": "application/json",
        "customData": {EXTENSION_KEY: extension(event)},
    }


def cdevent_for_record(record: AuditRecord, *, source: str, repo: str | None = None) -> dict[str, Any] | None:
    """:func:`cdevent` of an audit record (for export); ``repo`` names the deploy repo."""
    return cdevent({**record_to_event(record), "repo": repo}, source=source)
