"""The audit record: every deploy attempt, who ran it, what it changed and how it ended.

This module holds the values (``Attempt``, ``AuditRecord``, ``Actor``), the store interface
(``AuditStore``) and ``open_store(url)``. The SQL backends live in :mod:`deployctl.edges.audit`;
this module does no I/O itself except reading the environment in :func:`current_actor`.

The store is append-only: an attempt is written before the apply, its outcome is a separate
row appended after it (together with its notification outbox row, in one transaction), and
an attempt left without an outcome by a crash is closed as ``interrupted`` by the next run.
Attempts (and outcomes) of one reconcile wave can be written together, in one transaction and
one fsync (``start_many``, ``finish_many``), with the same durability per record (hash-chained).
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.chain import ChainReport
from deployctl.model.duration import parse_when as parse_when  # re-exported: history's --since/--until
from deployctl.model.review import ReviewRecord
from deployctl.model.verification import Verification
from deployctl.model.vocabulary import AUDIT_RESULTS, Trigger
from deployctl.model.vocabulary import (
    STARTED as STARTED,  # re-exported: the audit model's word for an open attempt
)

TRIGGERS: tuple[str, ...] = tuple(Trigger)
RESULTS: tuple[str, ...] = AUDIT_RESULTS
"""The result of an attempt that has no outcome yet (running, or its process died)."""

EVENT_SCHEMA = 1
"""Version of the exported event shape (``record_to_event``); bumped only on incompatible change."""


class AuditError(DeployctlError):
    """The audit store cannot be opened, read or written, or a write breaks its rules."""


@dataclass(frozen=True)
class Actor:
    """Who ran an attempt: a user on a host, and the CI job when run from CI."""

    user: str
    host: str
    ci_job: str | None = None


@dataclass(frozen=True)
class Attempt:
    """Everything known about one env/app deploy attempt before it is applied."""

    env: str
    app: str
    namespace: str
    workloads: tuple[str, ...]
    previous_sha: str | None
    new_sha: str
    image: str
    digest: str | None
    deploy_commit: str | None
    deploy_file: str
    file_commit: str | None
    file_author: str | None
    file_committer: str | None
    file_commit_time: datetime | None
    file_commit_summary: str | None
    reviewers: tuple[str, ...]
    app_commit_summary: str | None
    trigger: str
    actor: Actor
    started_at: datetime
    lock_holder: str | None = None
    """The identity in the environment lock (a Lease) held by the run that made this attempt."""
    review: ReviewRecord | None = None
    """With ``require_approval: forge``: the pull request that brought the change and the approvals that counted."""

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise InvalidInputError(f"audit: trigger {self.trigger!r} is not one of {', '.join(TRIGGERS)}")


@dataclass(frozen=True)
class Finish:
    """The outcome of one attempt, to be appended after its apply."""

    attempt_id: int
    result: str
    """One of RESULTS."""
    error: str | None = None
    digest: str | None = None
    finished_at: datetime | None = None
    """When the apply ended; None means when the outcome is written."""

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise InvalidInputError(f"audit: result {self.result!r} is not one of {', '.join(RESULTS)}")


@dataclass(frozen=True)
class AuditRecord:
    """An attempt with its outcome, as read back from the store."""

    id: int
    attempt: Attempt
    result: str
    """One of RESULTS, or ``"started"`` when no outcome was recorded yet."""
    error: str | None
    finished_at: datetime | None
    duration_seconds: float | None
    digest: str | None
    """The digest recorded with the outcome, else the one known before the apply."""

    @property
    def release(self) -> str | None:
        """Attempts sharing a deploy commit are one release."""
        return self.attempt.deploy_commit


class RolloutEventKind(StrEnum):
    """What happened to an attempt between its apply and its verdict."""

    PRE_DEPLOY = "pre-deploy"
    """The app's pre-deploy Job, before the apply: created (with its image), found from an earlier run, done."""
    APPLIED = "applied"
    """The apply was sent: the workload's new generation and image."""
    REVISION = "revision"
    """The rollout's new ReplicaSet (Deployment) or update revision (StatefulSet, DaemonSet)."""
    PROGRESS = "progress"
    """The replica counts changed: updated, ready and available of desired."""
    STALLED = "stalled"
    """Why the rollout did not finish: its failed condition, the pods' reasons, or the timeout."""
    VERDICT = "verdict"
    """The outcome and its message."""


MAX_EVENTS_PER_ATTEMPT = 64
"""At most this many rollout events are kept per attempt: the first progress events, the stall reason and the
verdict (which says how many progress events were left out), so a flapping rollout cannot grow the store."""


@dataclass(frozen=True)
class AttemptEvent:
    """One thing that happened to an attempt between its apply and its verdict (see RolloutEventKind)."""

    attempt_id: int
    seq: int
    """Order within the attempt, from 1."""
    at: datetime
    kind: str
    detail: str


@dataclass(frozen=True)
class OutboxEvent:
    """A notification waiting in the outbox, written with the outcome it announces."""

    id: int
    key: str
    """Idempotency key: the same for every delivery attempt of this event."""
    attempt_id: int
    payload: Mapping[str, Any]
    created_at: datetime
    attempts_made: int = 0
    """Delivery attempts already made to the sink this event was read for."""


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt of an outbox event to one sink."""

    outbox_id: int
    sink: str
    attempt_no: int
    attempted_at: datetime
    ok: bool
    error: str | None
    next_attempt_at: datetime | None
    """When to try again; None when delivered or given up (which ends the event for this sink)."""


class AuditStore(Protocol):
    """Where attempts and outcomes are appended. Every write is durable when the call returns."""

    url: str

    def start(self, attempt: Attempt) -> int:
        """Append an attempt before its apply; returns its id."""
        ...

    def start_many(self, attempts: Sequence[Attempt]) -> list[int]:
        """Append several attempts in one transaction (one fsync); returns their ids in input order."""
        ...

    def finish(
        self,
        attempt_id: int,
        *,
        result: str,
        error: str | None = None,
        digest: str | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """Append the outcome of an attempt and its outbox event, in one transaction."""
        ...

    def finish_many(self, finishes: Sequence[Finish]) -> None:
        """Append several outcomes and their outbox events in one transaction (one fsync).

        All or nothing: if any attempt is unknown, already has an outcome or appears twice,
        nothing is written and the AuditError names that attempt.
        """
        ...

    def close_interrupted(
        self, *, older_than: datetime | None = None, env: str | None = None, apps: Sequence[str] | None = None,
        holder_alive: Callable[[str | None], bool] | None = None, ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Give every attempt without an outcome (started before ``older_than``, of ``env``, of ``apps``, among
        ``ids``) an 'interrupted' one, except those whose lock holder ``holder_alive`` says still holds the
        app's lock."""
        ...

    def open_attempts(self, *, envs: Sequence[str]) -> list[AuditRecord]:
        """The attempts of ``envs`` without an outcome yet (running, or left open by a run that died), oldest first.
        One query: the counts of attempts and outcomes say how many are open (usually none: no row is read)."""
        ...

    def query(
        self,
        *,
        env: str | None = None,
        app: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        sha: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Records matching every filter, newest first; ``sha`` is a prefix of the new SHA or the release."""
        ...

    def record_verification(self, verification: Verification) -> int:
        """Append a succeeded attempt's verification and its outbox event in one transaction; returns its id."""
        ...

    def verifications(self, *, env: str | None = None, app: str | None = None, sha: str | None = None,
                      attempt_ids: Sequence[int] | None = None, limit: int | None = None) -> list[Verification]:
        """Verifications matching every filter, newest first (``sha``: the full new SHA)."""
        ...

    def verify_chain(self, *, since: int | None = None) -> ChainReport: ...  # docs/audit.md, the chain

    def unverified(self, attempt_ids: Sequence[int]) -> dict[int, str]:
        """Why each of these attempts (its row or its outcome's) does not verify (absent: verified)."""

    def unverified_verifications(self, verification_ids: Sequence[int]) -> dict[int, str]:
        """Why each of these verification rows does not verify in the chain (absent: verified)."""

    def get(self, attempt_id: int) -> AuditRecord | None:
        """The record of one attempt, or None when there is none with that id."""
        ...

    def add_events(self, events: Sequence[AttemptEvent]) -> None:
        """Append rollout events of attempts in one transaction (at most MAX_EVENTS_PER_ATTEMPT each)."""
        ...

    def events_of(self, attempt_id: int) -> list[AttemptEvent]:
        """The rollout events of one attempt, in order."""
        ...

    def register_sink(self, sink: str) -> None:
        """Start delivering to ``sink`` from the next event on (not the whole history)."""
        ...

    def pending_events(self, sink: str, *, now: datetime, limit: int = 100,
                       backfill_from: datetime | None = None) -> list[OutboxEvent]:
        """Events for ``sink`` neither delivered nor given up whose retry time has come, oldest first: those
        after the sink was registered, or with ``backfill_from`` those created since then (a backfill)."""
        ...

    def record_delivery(self, delivery: Delivery) -> None:
        """Append one delivery attempt."""
        ...

    def deliveries(self, *, sink: str | None = None) -> list[Delivery]:
        """Every delivery attempt, oldest first."""
        ...

    def next_retry_at(self, sink: str) -> datetime | None:
        """The earliest time a failed, not given up event for ``sink`` may be retried."""
        ...

    def close(self) -> None: ...


# --- actor -------------------------------------------------------------------------------------


def actor_from_env(environ: Mapping[str, str], *, host: str, fallback_user: str = "unknown") -> Actor:
    """The actor described by a process environment: CI user and job when in CI, else USER."""
    e = environ
    user = (
        e.get("GITHUB_TRIGGERING_ACTOR")
        or e.get("GITHUB_ACTOR")
        or e.get("GITLAB_USER_LOGIN")
        or e.get("BUILDKITE_BUILD_CREATOR")
        or e.get("CIRCLE_USERNAME")
        or e.get("BUILD_USER_ID")
        or e.get("USER")
        or e.get("LOGNAME")
        or e.get("USERNAME")
        or fallback_user
    )
    ci_job: str | None = None
    if e.get("GITHUB_RUN_ID") and e.get("GITHUB_REPOSITORY"):
        server = e.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        ci_job = f"{server}/{e['GITHUB_REPOSITORY']}/actions/runs/{e['GITHUB_RUN_ID']}"
        if e.get("GITHUB_RUN_ATTEMPT"):
            ci_job += f"/attempts/{e['GITHUB_RUN_ATTEMPT']}"
    elif e.get("CI_JOB_URL") or e.get("CI_JOB_ID"):
        ci_job = e.get("CI_JOB_URL") or f"gitlab:{e.get('CI_PROJECT_PATH', '')}#{e['CI_JOB_ID']}"
    elif e.get("BUILDKITE_BUILD_URL"):
        ci_job = e["BUILDKITE_BUILD_URL"]
    elif e.get("CIRCLE_BUILD_URL"):
        ci_job = e["CIRCLE_BUILD_URL"]
    elif e.get("BUILD_URL") or e.get("BUILD_ID"):
        ci_job = e.get("BUILD_URL") or f"{e.get('JOB_NAME', 'build')}#{e['BUILD_ID']}"
    elif e.get("CI") and e.get("CI_BUILD_ID"):
        ci_job = e["CI_BUILD_ID"]
    return Actor(user=user, host=host, ci_job=ci_job)


def current_actor() -> Actor:
    """The actor running this process."""
    try:
        fallback = getpass.getuser()
    except (KeyError, OSError):
        fallback = "unknown"
    return actor_from_env(os.environ, host=socket.gethostname(), fallback_user=fallback)


# --- times -------------------------------------------------------------------------------------



def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken as local time, as ``datetime.now()`` gives it."""
    return value.astimezone(UTC)


# --- export shape ------------------------------------------------------------------------------

#: The provenance of an attempt, common to the stored attempt and the exported event (same order).
PROVENANCE_FIELDS = (
    "previous_sha",
    "new_sha",
    "image",
    "digest",
    "deploy_commit",
    "deploy_file",
    "file_commit",
    "file_author",
    "file_committer",
    "file_commit_time",
    "file_commit_summary",
    "reviewers",
    "app_commit_summary",
    "trigger",
    "actor_user",
    "actor_host",
    "actor_ci_job",
)

EVENT_FIELDS = (
    "schema",
    "id",
    "release",
    "env",
    "app",
    "namespace",
    "workloads",
    "result",
    "error",
    "started_at",
    "finished_at",
    "duration_seconds",
    *PROVENANCE_FIELDS,
    "pull_request",
    "approvals",
)
"""The stable field names of an exported attempt, in order. Add fields at the end; never rename."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat().replace("+00:00", "Z")


def record_to_event(record: AuditRecord) -> dict[str, Any]:
    """One attempt as a flat JSON-ready dict with the stable names of EVENT_FIELDS."""
    a = record.attempt
    return {
        "schema": EVENT_SCHEMA,
        "id": record.id,
        "release": record.release,
        "env": a.env,
        "app": a.app,
        "namespace": a.namespace,
        "workloads": list(a.workloads),
        "result": record.result,
        "error": record.error,
        "started_at": _iso(a.started_at),
        "finished_at": _iso(record.finished_at),
        "duration_seconds": record.duration_seconds,
        "previous_sha": a.previous_sha,
        "new_sha": a.new_sha,
        "image": a.image,
        "digest": record.digest,
        "deploy_commit": a.deploy_commit,
        "deploy_file": a.deploy_file,
        "file_commit": a.file_commit,
        "file_author": a.file_author,
        "file_committer": a.file_committer,
        "file_commit_time": _iso(a.file_commit_time),
        "file_commit_summary": a.file_commit_summary,
        "reviewers": list(a.reviewers),
        "app_commit_summary": a.app_commit_summary,
        "trigger": a.trigger,
        "actor_user": a.actor.user,
        "actor_host": a.actor.host,
        "actor_ci_job": a.actor.ci_job,
        "pull_request": None if a.review is None else {"number": a.review.number, "url": a.review.url},
        "approvals": [] if a.review is None else [x.as_dict() for x in a.review.approvals],
    }


def attempt_event_to_dict(event: AttemptEvent) -> dict[str, Any]:
    """One rollout event, JSON-ready."""
    return {"seq": event.seq, "at": _iso(event.at), "kind": event.kind, "detail": event.detail}


def record_with_events(record: AuditRecord, events: Sequence[AttemptEvent]) -> dict[str, Any]:
    """One attempt in the export shape with its rollout events under ``events`` (``history --id N -o json``)."""
    return {**record_to_event(record), "events": [attempt_event_to_dict(e) for e in events]}
