"""Deploy outcomes as CDEvents (the CD Foundation's event vocabulary, spec v0.4.1): pure building.

An outcome in which an app now runs a new SHA is one ``service`` event:

- ``service.deployed``  the first deploy of the app to the environment (no previous SHA);
- ``service.rolledback`` a rollback-forward: the deploy-file commit written by ``deployctl rollback``
  (its summary starts ``Roll back <app> in <env> to``);
- ``service.upgraded``  any other new SHA.

Outcomes in which nothing was deployed (failed, blocked, refused, interrupted) are not service
events: :func:`cdevent` returns None for them.

A deploy's verification against its metrics (the outbox's ``deploy.verified`` payload) has no
``service`` predicate in the specification, so it is a custom event (CDEvents 0.4's ``dev.cdeventsx``
namespace, subject ``deployctl-verification``): ``dev.cdeventsx.deployctl-verification.finished.0.1.0``,
with an ``outcome`` (``success`` / ``failure``) and each check's last value beside its condition. deployctl's own fields (repo, deploy commit, SHA,
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
from datetime import UTC, datetime
from typing import Any

from deployctl.model.audit import AuditRecord, record_to_event
from deployctl.model.verification import Verification
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

VERIFICATION_EVENT_TYPE = "dev.cdeventsx.deployctl-verification.finished.0.1.0"
"""The custom CDEvents type of a recorded verification (verified or verification-failed)."""
VERIFICATION_PAYLOAD = "deploy.verified"
"""The outbox payload's ``event`` for a verification (the rollout's is ``deploy.finished``)."""

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


def verification_event_id(event: Mapping[str, Any]) -> str:
    """The id of a verification event: the attempt's parts plus the verification's own id and end, so that
    every verification of one attempt (``deployctl verify`` again) is its own event, the same on every sink."""
    verification = event.get("verification") or {}
    parts = (deploy_event_id(event), "verification", verification.get("id"), verification.get("finished_at"))
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, "\x1f".join("" if p is None else str(p) for p in parts)))


def event_id(event: Mapping[str, Any]) -> str:
    """The CDEvent id of any outbox payload: a deploy's or a verification's."""
    if event.get("event") == VERIFICATION_PAYLOAD:
        return verification_event_id(event)
    return deploy_event_id(event)


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
    if event.get("event") == VERIFICATION_PAYLOAD:
        return verification_cdevent(event, source=source)
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


def verification_cdevent(event: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The custom CDEvent of a verification payload: which deploy (env/app, artifact), the outcome, the checks."""
    env, app = str(event.get("env")), str(event.get("app"))
    verification: Mapping[str, Any] = event.get("verification") or {}
    checks = []
    for c in verification.get("checks") or ():
        values = [m.get("value") for m in c.get("measurements") or ()]
        checks.append({"name": c.get("name"), "query": c.get("query"), "condition": c.get("wanted"),
                       "passed": bool(c.get("passed")), "failures": c.get("failures"),
                       "failureLimit": c.get("failure_limit"), "lastValue": values[-1] if values else None})
    passed = event.get("result") == "verified"
    return {
        "context": {
            "version": SPEC_VERSION,
            "id": verification_event_id(event),
            "source": source,
            "type": VERIFICATION_EVENT_TYPE,
            "timestamp": verification.get("finished_at") or event.get("finished_at") or event.get("started_at"),
        },
        "subject": {
            "id": f"{env}/{app}",
            "source": source,
            "content": {
                "environment": {"id": env, "source": source},
                "artifactId": package_url(str(event.get("image") or ""), event.get("digest")),
                "outcome": "success" if passed else "failure",
                "reason": verification.get("reason") or "",
                "checks": checks,
            },
        },
        "customDataContentType": "application/json",
        "customData": {EXTENSION_KEY: {
            **extension(event), "deployResult": event.get("deploy_result"),
            "verificationId": verification.get("id"), "verificationTrigger": verification.get("trigger"),
            "verificationStartedAt": verification.get("started_at"),
            "verificationFinishedAt": verification.get("finished_at"),
        }},
    }


def verification_payload(record: AuditRecord, verification: Verification, *, verification_id: int) -> dict[str, Any]:
    """The outbox payload of a recorded verification: the attempt's export shape, the verification's result in
    ``result`` (the rollout's in ``deploy_result``), its reason in ``error`` when it failed, and its checks."""
    v = verification
    payload: dict[str, Any] = {
        **record_to_event(record), "event": VERIFICATION_PAYLOAD, "result": str(v.result),
        "deploy_result": record.result, "error": None if v.ok else v.reason,
        "verification": {"id": verification_id, "reason": v.reason, "trigger": v.trigger,
                         "started_at": _iso(v.started_at), "finished_at": _iso(v.finished_at),
                         "checks": [c.as_dict() for c in v.checks]},
    }
    payload["idempotency_key"] = verification_event_id(payload)
    return payload


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cdevent_for_record(record: AuditRecord, *, source: str, repo: str | None = None) -> dict[str, Any] | None:
    """:func:`cdevent` of an audit record (for export); ``repo`` names the deploy repo."""
    return cdevent({**record_to_event(record), "repo": repo}, source=source)
