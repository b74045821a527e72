"""The audit record queries shared by both backends: attempts, outcomes and reading them back."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from deployctl.edges.audit.chain import CHAIN_COLUMNS
from deployctl.edges.audit.chained import ChainAppender, ChainQueries
from deployctl.edges.audit.schema import ATTEMPT_COLUMNS
from deployctl.errors import InvalidInputError
from deployctl.model.audit import (
    MAX_EVENTS_PER_ATTEMPT,
    STARTED,
    Actor,
    Attempt,
    AttemptEvent,
    AuditError,
    AuditRecord,
    Finish,
    record_to_event,
    utc,
)
from deployctl.model.chain import Kind
from deployctl.model.review import ReviewRecord
from deployctl.model.verification import CheckOutcome, Verification
from deployctl.model.vocabulary import Result
from deployctl.rules.cdevents import deploy_event_id, verification_payload

log = structlog.get_logger(__name__)

INTERRUPTED_ERROR = (
    "no outcome was recorded: the process running this attempt stopped before it finished "
    "(crash, kill or power loss); check the workload's rollout"
)
_SHA_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")
_IDS_PER_QUERY = 500
"""Attempt ids looked up per query; far below SQLite's limit on bound parameters."""

# Built from the constant column list of the schema; user values only ever travel as parameters.
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (" + ", ".join(("id", *ATTEMPT_COLUMNS, *CHAIN_COLUMNS)) + ") "
    "VALUES (" + ", ".join("?" for _ in ("id", *ATTEMPT_COLUMNS, *CHAIN_COLUMNS)) + ")"
)
_OUTCOME_COLUMNS = ("attempt_id", "result", "error", "digest", "finished_at", "recorded_at", *CHAIN_COLUMNS)
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (" + ", ".join(_OUTCOME_COLUMNS) + ") "
    "VALUES (" + ", ".join("?" for _ in _OUTCOME_COLUMNS) + ")"
)
_SELECT_RECORDS = (
    "SELECT " + ", ".join("a." + c for c in ("id", *ATTEMPT_COLUMNS)) + ", "
    "o.result, o.error, o.digest, o.finished_at "
    "FROM attempts a LEFT JOIN outcomes o ON o.attempt_id = a.id"
)
_NEWEST_OPEN = " ORDER BY a.id DESC LIMIT (SELECT count(*) FROM attempts) - (SELECT count(*) FROM outcomes)"
_SELECT_VERIFICATIONS = (
    "SELECT v.id, v.attempt_id, a.env, a.app, a.new_sha, v.result, v.reason, v.checks, v.trigger, "
    "v.started_at, v.finished_at FROM verifications v JOIN attempts a ON a.id = v.attempt_id WHERE "
)


def _sha_prefix(sha: str) -> str:
    prefix = sha.strip().lower()
    if not _SHA_PREFIX.match(prefix):
        raise InvalidInputError(f"--sha {sha!r}: give at least 4 hex digits of a commit SHA")
    return prefix


class SqlStore(ChainQueries):
    """The store logic shared by both backends; subclasses supply the connection and dialect."""

    # -- attempts and outcomes -------------------------------------------------------------------
    def start(self, attempt: Attempt) -> int:
        return self.start_many([attempt])[0]

    def start_many(self, attempts: Sequence[Attempt]) -> list[int]:
        if not attempts:
            return []
        values = [self._attempt_values(a) for a in attempts]
        with self._write() as cur:
            chain = self._chain_appender(cur)
            # Ids are chosen here, under the chain lock, because each row's hash covers its id.
            first = int(cur.execute("SELECT coalesce(max(id), 0) + 1 FROM attempts").fetchone()[0])
            ids = list(range(first, first + len(values)))
            rows = [(i, *v) for i, v in zip(ids, values, strict=True)]
            cur.executemany(self._sql(_INSERT_ATTEMPT), [(*r, *chain.next(Kind.ATTEMPT, r)) for r in rows])
        for attempt_id, a in zip(ids, attempts, strict=True):
            log.debug("audit.started", id=attempt_id, env=a.env, app=a.app, sha=a.new_sha)
        return ids

    def _attempt_values(self, a: Attempt) -> tuple[Any, ...]:
        return (
            a.env,
            a.app,
            a.namespace,
            json.dumps(list(a.workloads)),
            a.previous_sha,
            a.new_sha,
            a.image,
            a.digest,
            a.deploy_commit,
            a.deploy_file,
            a.file_commit,
            a.file_author,
            a.file_committer,
            self._enc_time(a.file_commit_time),
            a.file_commit_summary,
            json.dumps(list(a.reviewers)),
            a.app_commit_summary,
            a.trigger,
            a.actor.user,
            a.actor.host,
            a.actor.ci_job,
            self._enc_time(a.started_at),
            a.lock_holder,
            None if a.review is None else json.dumps(a.review.as_dict(), sort_keys=True),
        )

    def finish(
        self,
        attempt_id: int,
        *,
        result: str,
        error: str | None = None,
        digest: str | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        self.finish_many(
            [Finish(attempt_id, result=result, error=error, digest=digest, finished_at=finished_at)]
        )

    def finish_many(self, finishes: Sequence[Finish]) -> None:
        if not finishes:
            return
        now = datetime.now(UTC)
        # The whole batch is checked before the first insert so that a refusal names the attempt
        # at fault; either way the transaction rolls back and nothing of the batch is written.
        unwritten = ""
        if len(finishes) > 1:
            unwritten = f"; none of the {len(finishes)} outcomes in this batch was written"
        with self._write() as cur:
            chain = self._chain_appender(cur)
            records = self._records_by_id(cur, [f.attempt_id for f in finishes])
            seen: set[int] = set()
            for f in finishes:
                record = records.get(f.attempt_id)
                if record is None:
                    raise AuditError(f"audit: no attempt with id {f.attempt_id} in {self.url}{unwritten}")
                if record.result != STARTED:
                    raise AuditError(
                        f"audit: attempt {f.attempt_id} already has the outcome {record.result!r}; "
                        f"outcomes are append-only and there is one per attempt{unwritten}"
                    )
                if f.attempt_id in seen:
                    raise AuditError(
                        f"audit: attempt {f.attempt_id} has two outcomes in one batch; "
                        f"there is one per attempt{unwritten}"
                    )
                seen.add(f.attempt_id)
            for f in finishes:
                self._append_outcome(
                    cur,
                    chain,
                    records[f.attempt_id],
                    result=f.result,
                    error=f.error,
                    digest=f.digest,
                    finished=utc(f.finished_at or now),
                )
        for f in finishes:
            log.debug("audit.finished", id=f.attempt_id, result=f.result)

    def close_interrupted(
        self, *, older_than: datetime | None = None, env: str | None = None, apps: Sequence[str] | None = None,
        holder_alive: Callable[[str | None], bool] | None = None, ids: Sequence[int] | None = None,
    ) -> list[int]:
        now = datetime.now(UTC)
        where = "o.attempt_id IS NULL"
        params: tuple[Any, ...] = ()
        if older_than is not None:
            where += " AND a.started_at < ?"
            params = (self._enc_time(older_than),)
        if env is not None:
            where += " AND a.env = ?"
            params = (*params, env)
        if apps is not None:
            if not apps:
                return []
            where += f" AND a.app IN ({', '.join('?' * len(apps))})"
            params = (*params, *apps)
        if ids is not None:
            where += f" AND a.id IN ({', '.join('?' * len(ids)) or 'NULL'})"  # IN (NULL): none
            params = (*params, *(int(i) for i in ids))
        closed: list[int] = []
        with self._write() as cur:
            chain = self._chain_appender(cur)
            rows = cur.execute(self._sql(self._select_records(where) + " ORDER BY a.id"), params).fetchall()
            for row in rows:
                record = self._decode(row)
                if holder_alive is not None and holder_alive(record.attempt.lock_holder):
                    continue  # its run still holds its environment's lock: running, not interrupted
                self._append_outcome(
                    cur, chain, record, result=Result.INTERRUPTED, error=INTERRUPTED_ERROR, digest=None, finished=now
                )
                closed.append(record.id)
        if closed:
            log.warning("audit.interrupted_closed", ids=closed, url=self.url)
        return closed

    def open_attempts(self, *, envs: Sequence[str]) -> list[AuditRecord]:
        rows = self._fetchall(self._select_records("o.attempt_id IS NULL") + _NEWEST_OPEN, ())
        return sorted((r for r in map(self._decode, rows) if r.attempt.env in envs), key=lambda r: r.id)

    def _append_outcome(
        self,
        cur: Any,
        chain: ChainAppender,
        record: AuditRecord,
        *,
        result: str,
        error: str | None,
        digest: str | None,
        finished: datetime,
    ) -> None:
        row = (record.id, result, error, digest, self._enc_time(finished), self._enc_time(datetime.now(UTC)))
        cur.execute(self._sql(_INSERT_OUTCOME), (*row, *chain.next(Kind.OUTCOME, row)))
        done = _with_outcome(record, result=result, error=error, digest=digest, finished=finished)
        event = record_to_event(done)
        key = deploy_event_id(event)  # one outcome per attempt: unique, and the id every sink and export carries
        payload = {"event": "deploy.finished", "idempotency_key": key, **event}
        cur.execute(
            self._sql("INSERT INTO outbox (key, attempt_id, payload, created_at) VALUES (?, ?, ?, ?)"),
            (key, record.id, json.dumps(payload, sort_keys=True), self._enc_time(finished)),
        )

    # -- verifications ---------------------------------------------------------------------------
    def record_verification(self, verification: Verification) -> int:
        v = verification
        with self._write() as cur:
            record = self._records_by_id(cur, [v.attempt_id]).get(v.attempt_id)
            if record is None:
                raise AuditError(f"audit: no attempt with id {v.attempt_id} in {self.url}")
            if record.result not in (Result.SUCCEEDED, Result.DRIFT_CORRECTED):
                raise AuditError(f"audit: attempt {v.attempt_id} ended {record.result!r}; only a succeeded "
                                 "rollout is verified")
            checks = json.dumps([c.as_dict() for c in v.checks], sort_keys=True)
            verification_id = self._append_verification(  # a chained row (edges/audit/chained.py)
                cur, (v.attempt_id, str(v.result), v.reason, checks, v.trigger, self._enc_time(v.started_at),
                      self._enc_time(v.finished_at), self._enc_time(datetime.now(UTC))),
            )
            payload = verification_payload(record, v, verification_id=verification_id)
            key = str(payload["idempotency_key"])  # this verification's CDEvent id, on every sink and retry
            cur.execute(
                self._sql("INSERT INTO outbox (key, attempt_id, payload, created_at) VALUES (?, ?, ?, ?)"),
                (key, v.attempt_id, json.dumps(payload, sort_keys=True), self._enc_time(v.finished_at)),
            )
        log.info("audit.verified", id=verification_id, attempt=v.attempt_id, env=v.env, app=v.app,
                 result=str(v.result))
        return verification_id

    def verifications(
        self, *, env: str | None = None, app: str | None = None, sha: str | None = None,
        attempt_ids: Sequence[int] | None = None, limit: int | None = None,
    ) -> list[Verification]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("a.env", env), ("a.app", app), ("a.new_sha", sha)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if attempt_ids is not None:
            if not attempt_ids:
                return []
            ids = list(dict.fromkeys(attempt_ids))[:_IDS_PER_QUERY]
            clauses.append("v.attempt_id IN (" + ", ".join("?" for _ in ids) + ")")
            params += ids
        where = " AND ".join(clauses) or "1 = 1"  # constant clauses; values travel as parameters
        sql = _SELECT_VERIFICATIONS + where + " ORDER BY v.finished_at DESC, v.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        out = []
        for id_, attempt_id, env_, app_, sha_, result, reason, checks, trigger, started, finished in self._fetchall(
            sql, params
        ):
            start, end = self._dec_time(started), self._dec_time(finished)
            assert start is not None and end is not None
            out.append(Verification(
                attempt_id=int(attempt_id), env=env_, app=app_, sha=sha_, result=result, reason=reason,
                checks=tuple(CheckOutcome.from_dict(c) for c in json.loads(checks)), started_at=start,
                finished_at=end, trigger=trigger, id=int(id_)))
        return out

    # -- rollout events --------------------------------------------------------------------------
    def add_events(self, events: Sequence[AttemptEvent]) -> None:
        if not events:
            return
        with self._write() as cur:
            counts: dict[int, int] = {}
            for attempt_id in dict.fromkeys(e.attempt_id for e in events):
                row = cur.execute(self._sql("SELECT count(*) FROM attempt_events WHERE attempt_id = ?"),
                                  (attempt_id,)).fetchone()
                counts[attempt_id] = int(row[0])
            dropped: dict[int, int] = {}
            for e in events:
                if counts[e.attempt_id] >= MAX_EVENTS_PER_ATTEMPT:  # the bound holds whoever writes
                    dropped[e.attempt_id] = dropped.get(e.attempt_id, 0) + 1
                    continue
                counts[e.attempt_id] += 1
                cur.execute(
                    self._sql("INSERT INTO attempt_events (attempt_id, seq, at, kind, detail) VALUES (?, ?, ?, ?, ?)"),
                    (e.attempt_id, e.seq, self._enc_time(e.at), str(e.kind), e.detail[:2000]),
                )
        if dropped:
            log.warning("audit.events_dropped", dropped=dropped, limit=MAX_EVENTS_PER_ATTEMPT)

    def events_of(self, attempt_id: int) -> list[AttemptEvent]:
        rows = self._fetchall(
            "SELECT attempt_id, seq, at, kind, detail FROM attempt_events WHERE attempt_id = ? ORDER BY seq",
            (attempt_id,),
        )
        events = []
        for attempt, seq, at, kind, detail in rows:
            when = self._dec_time(at)
            assert when is not None
            events.append(AttemptEvent(attempt_id=int(attempt), seq=int(seq), at=when, kind=kind, detail=detail))
        return events

    # -- reading ---------------------------------------------------------------------------------
    def get(self, attempt_id: int) -> AuditRecord | None:
        rows = self._fetchall(self._select_records("a.id = ?"), (int(attempt_id),))
        return self._decode(rows[0]) if rows else None
    @staticmethod
    def _select_records(where: str) -> str:
        return _SELECT_RECORDS + " WHERE " + where

    def _records_by_id(self, cur: Any, attempt_ids: Sequence[int]) -> dict[int, AuditRecord]:
        records: dict[int, AuditRecord] = {}
        unique = list(dict.fromkeys(attempt_ids))
        for i in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[i : i + _IDS_PER_QUERY]
            where = "a.id IN (" + ", ".join("?" for _ in chunk) + ")"
            for row in cur.execute(self._sql(self._select_records(where)), chunk).fetchall():
                record = self._decode(row)
                records[record.id] = record
        return records

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
        clauses: list[str] = []
        params: list[Any] = []
        if env is not None:
            clauses.append("a.env = ?")
            params.append(env)
        if app is not None:
            clauses.append("a.app = ?")
            params.append(app)
        if since is not None:
            clauses.append("a.started_at >= ?")
            params.append(self._enc_time(since))
        if until is not None:
            clauses.append("a.started_at <= ?")
            params.append(self._enc_time(until))
        if sha is not None:
            pattern = _sha_prefix(sha) + self.prefix_wildcard
            clauses.append(f"(a.new_sha {self.prefix_match} ? OR a.deploy_commit {self.prefix_match} ?)")
            params += [pattern, pattern]
        sql = (
            self._select_records(" AND ".join(clauses) or "1 = 1") + " ORDER BY a.started_at DESC, a.id DESC"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [self._decode(row) for row in self._fetchall(sql, params)]

    def _decode(self, row: Sequence[Any]) -> AuditRecord:
        (id_, env, app, namespace, workloads, previous_sha, new_sha, image, digest, deploy_commit,
         deploy_file, file_commit, file_author, file_committer, file_commit_time, file_commit_summary,
         reviewers, app_commit_summary, trigger, actor_user, actor_host, actor_ci_job, started_at,
         lock_holder, review, result, error, outcome_digest, finished_at) = row  # fmt: skip
        started = self._dec_time(started_at)
        assert started is not None
        attempt = Attempt(
            env=env,
            app=app,
            namespace=namespace,
            workloads=tuple(json.loads(workloads)),
            previous_sha=previous_sha,
            new_sha=new_sha,
            image=image,
            digest=digest,
            deploy_commit=deploy_commit,
            deploy_file=deploy_file,
            file_commit=file_commit,
            file_author=file_author,
            file_committer=file_committer,
            file_commit_time=self._dec_time(file_commit_time),
            file_commit_summary=file_commit_summary,
            reviewers=tuple(json.loads(reviewers)),
            app_commit_summary=app_commit_summary,
            trigger=trigger,
            actor=Actor(user=actor_user, host=actor_host, ci_job=actor_ci_job),
            started_at=started,
            lock_holder=lock_holder,
            review=ReviewRecord.from_dict(json.loads(review)) if review else None,
        )
        finished = self._dec_time(finished_at)
        return AuditRecord(
            id=int(id_),
            attempt=attempt,
            result=result or STARTED,
            error=error,
            finished_at=finished,
            duration_seconds=None if finished is None else (finished - started).total_seconds(),
            digest=outcome_digest or digest,
        )

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_outcome(
    record: AuditRecord, *, result: str, error: str | None, digest: str | None, finished: datetime
) -> AuditRecord:
    return AuditRecord(
        id=record.id,
        attempt=record.attempt,
        result=result,
        error=error,
        finished_at=finished,
        duration_seconds=(finished - utc(record.attempt.started_at)).total_seconds(),
        digest=digest or record.digest,
    )

