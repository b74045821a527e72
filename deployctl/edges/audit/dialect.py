"""What every SQL audit store shares below its queries: the dialect hooks and opening the schema."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog

from deployctl.edges.audit.schema import MIGRATIONS, SCHEMA_VERSION, Migration
from deployctl.model.audit import AuditError
from deployctl.redact import redact

log = structlog.get_logger(__name__)


class SqlDialect:
    """The connection and dialect hooks a backend supplies, and the forward migration built on them.

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
            raise AuditError(f"audit: read from {self.url} failed: {redact(str(exc))}") from exc

    def _enc_time(self, value: datetime | None) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _dec_time(self, value: Any) -> datetime | None:
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _has_table(self, cur: Any, name: str) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    def _open_schema(self, cur: Any, *, where: str, time_type: str) -> None:
        """Create the version table, refuse a schema newer than this code, migrate forward.

        A store that is up to date is only read here, so a role that may only insert and select
        (the PostgreSQL writer role of docs/audit.md) can open it.
        """
        if not self._has_table(cur, "schema_version"):
            cur.execute(
                "CREATE TABLE schema_version "
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
            if migration.backfill is not None:
                with self._updates_allowed(cur, migration.backfill_tables):
                    migration.backfill(cur, self)
            cur.execute(
                self._sql("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)"),
                (migration.version, migration.description, self._enc_time(datetime.now(UTC))),
            )
            log.info("audit.migrated", url=self.url, version=migration.version)

    def _migration_statements(self, migration: Migration) -> Sequence[str]:
        raise NotImplementedError  # pragma: no cover

    @contextmanager
    def _updates_allowed(self, cur: Any, tables: Sequence[str]) -> Iterator[None]:  # pragma: no cover
        """Lift the append-only UPDATE triggers of ``tables`` inside a migration's transaction, then restore them."""
        raise NotImplementedError
        yield

    def schema_version(self) -> int:
        return int(self._fetchall("SELECT max(version) FROM schema_version")[0][0] or 0)
