"""The bridge from reconcile outcomes to the audit history.

Builds an :class:`~deployctl.model.audit.Attempt` from a planned change and what git knows about it
(the commit that last changed the deploy file, its author and reviewers, the app commit's
message when its source repo is local) and appends it to the store before the apply; the
outcome is appended after. Provenance is looked up once per deploy file and cached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import structlog

from deployctl.edges.git import history, repo
from deployctl.model import audit
from deployctl.model.vocabulary import Trigger
from deployctl.reconcile.sink import AttemptItem, DecisionItem, FinishItem
from deployctl.rules.plan import Action, Change

log = structlog.get_logger(__name__)


class AuditRecorder:
    """An :class:`~deployctl.reconcile.sink.AuditSink` writing to an :class:`~deployctl.model.audit.AuditStore`."""

    def __init__(
        self,
        store: audit.AuditStore,
        *,
        repo_path: str | Path | None,
        trigger: str,
        actor: audit.Actor | None = None,
        sources: Mapping[str, Path] | None = None,
        lock_holder: str | None = None,
    ) -> None:
        self.store = store
        self.repo_path = Path(repo_path) if repo_path is not None else None
        self.trigger = trigger
        self.actor = actor or audit.current_actor()
        self._lock = threading.Lock()
        self._lookups: dict[tuple[str, ...], history.CommitInfo | None] = {}
        self.sources = dict(sources or {})
        self.lock_holder = lock_holder  # this run's identity in the environment locks it holds

    def close_interrupted(self, *, env: str | None = None, apps: Sequence[str] | None = None) -> list[int]:
        """Close the attempts of ``env``'s ``apps`` that a run which no longer holds their locks left open.

        Called right after this run took those apps' locks: whoever recorded an attempt there under another
        lock holder has lost that lock (it expired, or was released without closing the attempt), so its
        attempt is over. ``env=None`` closes every open attempt (only safe when no other run can be going)."""
        mine = self.lock_holder
        ids = self.store.close_interrupted(env=env, apps=apps,
                                           holder_alive=None if mine is None else (lambda h: h == mine))
        if ids:
            log.warning("audit.interrupted_closed", env=env, attempts=ids)
        return ids

    def open_attempts(self, envs: Sequence[str]) -> list[audit.AuditRecord]:
        return self.store.open_attempts(envs=envs)

    def close_abandoned(self, attempt_ids: Sequence[int]) -> list[int]:
        return self.store.close_interrupted(ids=attempt_ids)

    # -- provenance ---------------------------------------------------------------------------

    def _cached(self, key: tuple[str, ...], lookup: Callable[[], history.CommitInfo | None]) -> history.CommitInfo | None:
        """One git lookup per key and run; a commit that cannot be read is recorded as unknown."""
        with self._lock:
            if key in self._lookups:
                return self._lookups[key]
        try:
            info = lookup()
        except repo.RepoError:
            info = None
        with self._lock:
            self._lookups[key] = info
        return info

    def _file_commit(self, path: str, ref: str | None) -> history.CommitInfo | None:
        if self.repo_path is None or ref is None:
            return None
        where = self.repo_path
        return self._cached(("last_change", str(where), path, ref), lambda: history.last_change(where, path, ref=ref))

    def _commit_in(self, where: Path | None, sha: str | None) -> history.CommitInfo | None:
        if where is None or sha is None:
            return None
        return self._cached(("commit", str(where), sha), lambda: history.commit_info(where, sha))

    # -- AuditSink ----------------------------------------------------------------------------

    def attempts_started(self, items: Sequence[AttemptItem], *, deploy_commit: str | None,
                         holders: Sequence[str | None] | None = None) -> list[int | None]:
        """Several attempts (change, image) in one durable write, before any of them is applied; ``holders``
        gives each its own lock holder (a sharded run's fence differs by slot), else this recorder's."""
        attempts = [self._attempt(change, image=image, deploy_commit=deploy_commit) for change, image in items]
        if holders is not None:
            attempts = [replace(a, lock_holder=h) for a, h in zip(attempts, holders, strict=True)]
        return list(self.store.start_many(attempts)) if attempts else []

    def attempts_finished(self, items: Sequence[FinishItem]) -> None:
        """Several outcomes (attempt id, result, error) in one durable write."""
        finishes = [audit.Finish(attempt_id=i, result=r, error=e) for i, r, e in items if i is not None]
        if finishes:
            self.store.finish_many(finishes)

    def decisions(self, items: Sequence[DecisionItem], *, deploy_commit: str | None,
                  holders: Sequence[str | None] | None = None) -> list[int | None]:
        """Attempts decided without an apply: the attempts in one write, their outcomes in the next
        (``holders`` as in :meth:`attempts_started`)."""
        if not items:
            return []
        attempts = [self._attempt(change, image=image, deploy_commit=deploy_commit) for change, image, _, _ in items]
        if holders is not None:
            attempts = [replace(a, lock_holder=h) for a, h in zip(attempts, holders, strict=True)]
        ids = self.store.start_many(attempts)
        self.store.finish_many([audit.Finish(attempt_id=i, result=result, error=error)
                                for i, (_, _, result, error) in zip(ids, items, strict=True)])
        return list(ids)

    def rollout_events(self, events: Sequence[audit.AttemptEvent]) -> None:
        self.store.add_events(events)

    def _attempt(self, change: Change, *, image: str, deploy_commit: str | None) -> audit.Attempt:
        target = change.target
        file_commit = self._file_commit(target.path, deploy_commit) if target else None
        merge = self._commit_in(self.repo_path, deploy_commit)
        app_commit = self._commit_in(self.sources.get(change.app), change.new_sha)
        reviewers = tuple(dict.fromkeys((*(merge.reviewers if merge else ()),
                                         *(file_commit.reviewers if file_commit else ()))))
        digest = image.split("@", 1)[1] if "@" in image else None
        trigger = Trigger.DRIFT if change.action is Action.DRIFT and self.trigger in (
            Trigger.WATCH, Trigger.CI, Trigger.MANUAL) else self.trigger
        attempt = audit.Attempt(
            env=change.env,
            app=change.app,
            namespace=change.namespace,
            workloads=tuple(f"{w.kind.lower()}/{w.name}" for w in change.workloads),
            previous_sha=change.old_sha,
            new_sha=change.new_sha or "",
            image=image,
            digest=digest,
            deploy_commit=deploy_commit,
            deploy_file=target.path if target else "",
            file_commit=file_commit.sha if file_commit else None,
            file_author=f"{file_commit.author_name} <{file_commit.author_email}>" if file_commit else None,
            file_committer=f"{file_commit.committer_name} <{file_commit.committer_email}>" if file_commit else None,
            file_commit_time=file_commit.time if file_commit else None,
            file_commit_summary=file_commit.summary if file_commit else None,
            reviewers=reviewers,
            app_commit_summary=app_commit.summary if app_commit else None,
            trigger=trigger,
            actor=self.actor,
            started_at=datetime.now(UTC),
            lock_holder=self.lock_holder,
            review=change.review,
        )
        return attempt
