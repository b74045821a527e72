"""The SQL audit stores: SQLite (embedded default) and PostgreSQL (psycopg 3).

Both keep the same append-only schema: ``attempts`` (written before an apply), ``outcomes``
(one per attempt, appended after it), ``outbox`` (one notification event per outcome, written
in the same transaction), ``sinks`` and ``deliveries`` (notification delivery attempts).
Nothing is ever updated or deleted; the database refuses it with triggers. The schema is
versioned in ``schema_version`` and migrated forward when a store is opened.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from deployctl.edges.audit.views import DEPLOY_EVENTS_POSTGRES, DEPLOY_EVENTS_SQLITE
from deployctl.errors import InvalidInputError
from deployctl.model.audit import (
    STARTED,
    Actor,
    Attempt,
    AuditError,
    AuditRecord,
    Delivery,
    Finish,
    OutboxEvent,
    record_to_event,
    utc,
)

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger(__name__)

INTERRUPTED_ERROR = (
    "no outcome was recorded: the process running this attempt stopped before it finished "
    "(crash, kill or power loss); check the workload's rollout"
)
_SHA_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")
_IDS_PER_QUERY = 500
"""Attempt ids looked up per query; far below SQLite's limit on bound parameters."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_ATTEMPT_COLUMNS = (
    "env",
    "app",
    "namespace",
    "workloads",
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
    "started_at",
)

# Built from the constant column list above; user values only ever travel as parameters.
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (" + ", ".join(_ATTEMPT_COLUMNS) + ") "
    "VALUES (" + ", ".join("?" for _ in _ATTEMPT_COLUMNS) + ") RETURNING id"
)
_SELECT_RECORDS = (
    "SELECT " + ", ".join("a." + c for c in ("id", *_ATTEMPT_COLUMNS)) + ", "
    "o.result, o.error, o.digest, o.finished_at "
    "FROM attempts a LEFT JOIN outcomes o ON o.attempt_id = a.id"
)


def _attempt_table(id_column: str, time_type: str) -> str:
    return f"""CREATE TABLE attempts (
        id {id_column},
        env TEXT NOT NULL, app TEXT NOT NULL, namespace TEXT NOT NULL, workloads TEXT NOT NULL,
        previous_sha TEXT, new_sha TEXT NOT NULL, image TEXT NOT NULL, digest TEXT,
        deploy_commit TEXT, deploy_file TEXT NOT NULL,
        file_commit TEXT, file_author TEXT, file_committer TEXT, file_commit_time {time_type},
        file_commit_summary TEXT, reviewers TEXT NOT NULL, app_commit_summary TEXT,
        trigger TEXT NOT NULL, actor_user TEXT NOT NULL, actor_host TEXT NOT NULL, actor_ci_job TEXT,
        started_at {time_type} NOT NULL)"""


_INDEXES = (
    "CREATE INDEX attempts_app_started ON attempts (app, started_at)",
    "CREATE INDEX attempts_env_started ON attempts (env, started_at)",
    "CREATE INDEX attempts_started ON attempts (started_at)",
    "CREATE INDEX attempts_new_sha ON attempts (new_sha)",
    "CREATE INDEX attempts_deploy_commit ON attempts (deploy_commit)",
    "CREATE INDEX deliveries_sink_outbox ON deliveries (sink, outbox_id)",
)
_APPEND_ONLY_TABLES = ("attempts", "outcomes", "outbox", "sinks", "deliveries")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "attempts, outcomes, outbox, sinks, deliveries; append-only",
        sqlite=(
            _attempt_table("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT"),
            """CREATE TABLE outcomes (
                attempt_id INTEGER PRIMARY KEY REFERENCES attempts (id),
                result TEXT NOT NULL, error TEXT, digest TEXT,
                finished_at TEXT NOT NULL, recorded_at TEXT NOT NULL)""",
            """CREATE TABLE outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
                attempt_id INTEGER NOT NULL REFERENCES attempts (id),
                payload TEXT NOT NULL, created_at TEXT NOT NULL)""",
            """CREATE TABLE sinks (
                name TEXT PRIMARY KEY, first_outbox_id INTEGER NOT NULL, added_at TEXT NOT NULL)""",
            """CREATE TABLE deliveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                outbox_id INTEGER NOT NULL REFERENCES outbox (id), sink TEXT NOT NULL,
                attempt_no INTEGER NOT NULL, attempted_at TEXT NOT NULL, ok INTEGER NOT NULL,
                error TEXT, next_attempt_at TEXT, UNIQUE (outbox_id, sink, attempt_no))""",
            *_INDEXES,
            *(
                f"""CREATE TRIGGER {t}_append_only_{op.lower()} BEFORE {op} ON {t}
                BEGIN SELECT RAISE(ABORT, 'the audit store is append-only'); END"""
                for t in _APPEND_ONLY_TABLES
                for op in ("UPDATE", "DELETE")
            ),
        ),
        postgres=(
            _attempt_table("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "TIMESTAMPTZ"),
            """CREATE TABLE outcomes (
                attempt_id BIGINT PRIMARY KEY REFERENCES attempts (id),
                result TEXT NOT NULL, error TEXT, digest TEXT,
                finished_at TIMESTAMPTZ NOT NULL, recorded_at TIMESTAMPTZ NOT NULL)""",
            """CREATE TABLE outbox (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, key TEXT NOT NULL UNIQUE,
                attempt_id BIGINT NOT NULL REFERENCES attempts (id),
                payload TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)""",
            """CREATE TABLE sinks (
                name TEXT PRIMARY KEY, first_outbox_id BIGINT NOT NULL, added_at TIMESTAMPTZ NOT NULL)""",
            """CREATE TABLE deliveries (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                outbox_id BIGINT NOT NULL REFERENCES outbox (id), sink TEXT NOT NULL,
                attempt_no INTEGER NOT NULL, attempted_at TIMESTAMPTZ NOT NULL, ok BOOLEAN NOT NULL,
                error TEXT, next_attempt_at TIMESTAMPTZ, UNIQUE (outbox_id, sink, attempt_no))""",
            *_INDEXES,
            """CREATE FUNCTION deployctl_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'the audit store is append-only'; END $$""",
            *(
                f"""CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {t}
                FOR EACH STATEMENT EXECUTE FUNCTION deployctl_append_only()"""
                for t in _APPEND_ONLY_TABLES
            ),
        ),
    ),
    Migration(
        4,
        "deploy_events view: one row per finished deploy, stable columns (docs/analytics.md)",
        sqlite=(DEPLOY_EVENTS_SQLITE,),
        postgres=(DEPLOY_EVENTS_POSTGRES,),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def _sha_prefix(sha: str) -> str:
    prefix = sha.strip().lower()
    if not _SHA_PREFIX.match(prefix):
        raise InvalidInputError(f"--sha {sha!r}: give at least 4 hex digits of a commit SHA")
    return prefix


class SqlStore:
    """The store logic shared by both backends; subclasses supply the connection and dialect.

    One store object may be shared by threads (a reconcile applies apps concurrently): its one
    connection is used under a lock, so transactions from different threads never interleave.
    """

    url: str
    _lock: threading.RLock
    placeholder = "?"
    prefix_match = "GLOB"
    prefix_wildcard = "*"

    # -- dialect hooks ---------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Any]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    def _read(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _db_errors(self) -> type[Exception]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._lock:
                return list(self._read().execute(self._sql(sql), params).fetchall())
        except self._db_errors() as exc:
            raise AuditError(f"audit: read from {self.url} failed: {exc}") from exc

    def _enc_time(self, value: datetime | None) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _dec_time(self, value: Any) -> datetime | None:
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    def _open_schema(self, cur: Any, *, where: str, time_type: str) -> None:
        """Create the version table, refuse a schema newer than this code, migrate forward."""
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            f"(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at {time_type} NOT NULL)"
        )
        current = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise AuditError(
                f"audit: {where} has schema version {current}, newer than this deployctl "
                f"understands ({SCHEMA_VERSION}); upgrade deployctl"
            )
        self._migrate(cur, int(current))

    def _migrate(self, cur: Any, current: int) -> None:
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in self._migration_statements(migration):
                cur.execute(statement)
            cur.execute(
                self._sql("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)"),
                (migration.version, migration.description, self._enc_time(datetime.now(UTC))),
            )
            log.info("audit.migrated", url=self.url, version=migration.version)

    def _migration_statements(self, migration: Migration) -> Sequence[str]:
        raise NotImplementedError  # pragma: no cover

    def schema_version(self) -> int:
        return int(self._fetchall("SELECT max(version) FROM schema_version")[0][0] or 0)

    # -- attempts and outcomes -------------------------------------------------------------------
    def start(self, attempt: Attempt) -> int:
        return self.start_many([attempt])[0]

    def start_many(self, attempts: Sequence[Attempt]) -> list[int]:
        if not attempts:
            return []
        rows = [self._attempt_values(a) for a in attempts]
        with self._write() as cur:
            ids = [int(cur.execute(self._sql(_INSERT_ATTEMPT), row).fetchone()[0]) for row in rows]
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
                    records[f.attempt_id],
                    result=f.result,
                    error=f.error,
                    digest=f.digest,
                    finished=utc(f.finished_at or now),
                )
        for f in finishes:
            log.debug("audit.finished", id=f.attempt_id, result=f.result)

    def close_interrupted(self, *, older_than: datetime | None = None) -> list[int]:
        now = datetime.now(UTC)
        where = "o.attempt_id IS NULL"
        params: tuple[Any, ...] = ()
        if older_than is not None:
            where += " AND a.started_at < ?"
            params = (self._enc_time(older_than),)
        closed: list[int] = []
        with self._write() as cur:
            rows = cur.execute(self._sql(self._select_records(where) + " ORDER BY a.id"), params).fetchall()
            for row in rows:
                record = self._decode(row)
                self._append_outcome(
                    cur, record, result="interrupted", error=INTERRUPTED_ERROR, digest=None, finished=now
                )
                closed.append(record.id)
        if closed:
            log.warning("audit.interrupted_closed", ids=closed, url=self.url)
        return closed

    def _append_outcome(
        self,
        cur: Any,
        record: AuditRecord,
        *,
        result: str,
        error: str | None,
        digest: str | None,
        finished: datetime,
    ) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO outcomes (attempt_id, result, error, digest, finished_at, recorded_at) "
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (record.id, result, error, digest, self._enc_time(finished), self._enc_time(datetime.now(UTC))),
        )
        done = _with_outcome(record, result=result, error=error, digest=digest, finished=finished)
        key = uuid.uuid4().hex
        payload = {"event": "deploy.finished", "idempotency_key": key, **record_to_event(done)}
        cur.execute(
            self._sql("INSERT INTO outbox (key, attempt_id, payload, created_at) VALUES (?, ?, ?, ?)"),
            (key, record.id, json.dumps(payload, sort_keys=True), self._enc_time(finished)),
        )

    # -- reading ---------------------------------------------------------------------------------
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
         result, error, outcome_digest, finished_at) = row  # fmt: skip
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

    # -- notification outbox ---------------------------------------------------------------------
    def register_sink(self, sink: str) -> None:
        with self._write() as cur:
            if cur.execute(self._sql("SELECT 1 FROM sinks WHERE name = ?"), (sink,)).fetchone():
                return
            last = cur.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]
            cur.execute(
                self._sql("INSERT INTO sinks (name, first_outbox_id, added_at) VALUES (?, ?, ?)"),
                (sink, int(last), self._enc_time(datetime.now(UTC))),
            )
        log.info("notify.sink_registered", sink=sink, after_event=int(last))

    def pending_events(self, sink: str, *, now: datetime, limit: int = 100) -> list[OutboxEvent]:
        sql = """SELECT o.id, o.key, o.attempt_id, o.payload, o.created_at,
                   (SELECT count(*) FROM deliveries d WHERE d.outbox_id = o.id AND d.sink = ?)
               FROM outbox o JOIN sinks s ON s.name = ?
               WHERE o.id > s.first_outbox_id
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.outbox_id = o.id AND d.sink = ?
                                 AND (d.next_attempt_at IS NULL OR d.next_attempt_at > ?))
               ORDER BY o.id LIMIT ?"""
        rows = self._fetchall(sql, (sink, sink, sink, self._enc_time(now), limit))
        events = []
        for id_, key, attempt_id, payload, created_at, made in rows:
            created = self._dec_time(created_at)
            assert created is not None
            events.append(
                OutboxEvent(
                    id=int(id_),
                    key=key,
                    attempt_id=int(attempt_id),
                    payload=json.loads(payload),
                    created_at=created,
                    attempts_made=int(made),
                )
            )
        return events

    def record_delivery(self, delivery: Delivery) -> None:
        d = delivery
        with self._write() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO deliveries "
                    "(outbox_id, sink, attempt_no, attempted_at, ok, error, next_attempt_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
                ),
                (
                    d.outbox_id,
                    d.sink,
                    d.attempt_no,
                    self._enc_time(d.attempted_at),
                    d.ok,
                    d.error,
                    self._enc_time(d.next_attempt_at),
                ),
            )

    def deliveries(self, *, sink: str | None = None) -> list[Delivery]:
        sql = "SELECT outbox_id, sink, attempt_no, attempted_at, ok, error, next_attempt_at FROM deliveries"
        params: tuple[Any, ...] = ()
        if sink is not None:
            sql += " WHERE sink = ?"
            params = (sink,)
        rows = self._fetchall(sql + " ORDER BY id", params)
        out = []
        for outbox_id, sink_, attempt_no, attempted_at, ok, error, next_at in rows:
            attempted = self._dec_time(attempted_at)
            assert attempted is not None
            out.append(
                Delivery(
                    outbox_id=int(outbox_id),
                    sink=sink_,
                    attempt_no=int(attempt_no),
                    attempted_at=attempted,
                    ok=bool(ok),
                    error=error,
                    next_attempt_at=self._dec_time(next_at),
                )
            )
        return out

    def next_retry_at(self, sink: str) -> datetime | None:
        sql = """SELECT min(last.next_at) FROM (
                 SELECT d.outbox_id, max(d.next_attempt_at) AS next_at,
                        sum(CASE WHEN d.next_attempt_at IS NULL THEN 1 ELSE 0 END) AS done
                 FROM deliveries d WHERE d.sink = ? GROUP BY d.outbox_id) last
               WHERE last.done = 0"""
        rows = self._fetchall(sql, (sink,))
        return None if not rows else self._dec_time(rows[0][0])

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


# --- SQLite ------------------------------------------------------------------------------------


class SqliteStore(SqlStore):
    """The embedded store: one SQLite file in WAL mode, every commit fsynced (synchronous=FULL)."""

    BUSY_TIMEOUT_MS = 30_000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite://{path.resolve()}"
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                path, timeout=self.BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {self.BUSY_TIMEOUT_MS}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise AuditError(f"audit: {path} cannot use WAL mode (got {mode!r}); put it on a local disk")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            with self._write() as cur:
                self._open_schema(cur, where=str(path), time_type="TEXT")
        except sqlite3.Error as exc:
            raise AuditError(f"audit: cannot open SQLite store {path}: {exc}") from exc

    def _migration_statements(self, migration: Migration) -> Sequence[str]:
        return migration.sqlite

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, self._transaction() as cur:
            yield cur

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            raise AuditError(f"audit: write to {self.path} failed: {exc}") from exc
        finally:
            cur.close()

    def _read(self) -> sqlite3.Connection:
        return self._conn

    def _db_errors(self) -> type[Exception]:
        return sqlite3.Error

    def _enc_time(self, value: datetime | None) -> str | None:
        # Fixed width (always microseconds, always Z) so that text order is time order.
        if value is None:
            return None
        return utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"

    def _dec_time(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def close(self) -> None:
        self._conn.close()


# --- PostgreSQL --------------------------------------------------------------------------------

_PG_MIGRATION_LOCK = 0x6465706C6F79  # "deploy": serialises concurrent migrations


class PostgresStore(SqlStore):
    """The shared store: a PostgreSQL database (psycopg 3), one transaction per append."""

    placeholder = "%s"
    prefix_match = "LIKE"
    prefix_wildcard = "%"

    def __init__(self, url: str, *, connect: Callable[..., psycopg.Connection[Any]] | None = None) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise AuditError("audit: PostgreSQL needs psycopg; install deployctl[postgres]") from exc
        self.url = _redact(url)
        self._lock = threading.RLock()
        self._psycopg = psycopg
        try:
            self._conn = (connect or psycopg.connect)(url, autocommit=True)
            with self._write() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
                self._open_schema(cur, where=self.url, time_type="TIMESTAMPTZ")
        except psycopg.Error as exc:
            raise AuditError(f"audit: cannot open PostgreSQL store {self.url}: {exc}") from exc

    def _migration_statements(self, migration: Migration) -> Sequence[str]:
        return migration.postgres

    @contextmanager
    def _write(self) -> Iterator[Any]:
        try:
            with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as exc:
            raise AuditError(f"audit: write to {self.url} failed: {exc}") from exc

    def _read(self) -> Any:
        return self._conn

    def _db_errors(self) -> type[Exception]:
        return self._psycopg.Error

    def _enc_time(self, value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)

    def _dec_time(self, value: Any) -> datetime | None:
        return None if value is None else utc(value)

    def close(self) -> None:
        self._conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
