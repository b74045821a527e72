"""The embedded audit store: one SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from deployctl.edges.audit.chain import AuditKeys
from deployctl.edges.audit.schema import Migration, append_only_update_trigger_sqlite
from deployctl.edges.audit.sql import SqlStore
from deployctl.model.audit import AuditError, utc


class SqliteStore(SqlStore):
    """The embedded store: one SQLite file in WAL mode, every commit fsynced (synchronous=FULL)."""

    BUSY_TIMEOUT_MS = 30_000

    def __init__(self, path: Path, *, keys: AuditKeys | None = None) -> None:
        self.path = path
        self.keys = keys
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

    def _lock_chain(self, cur: Any) -> None:
        """Nothing more to take: every write transaction here is BEGIN IMMEDIATE, the database's write lock."""

    @contextmanager
    def _updates_allowed(self, cur: Any, tables: Sequence[str]) -> Iterator[None]:
        for table in tables:
            cur.execute(f"DROP TRIGGER {table}_append_only_update")
        yield
        for table in tables:
            cur.execute(append_only_update_trigger_sqlite(table))

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

    def _has_table(self, cur: Any, name: str) -> bool:
        found = cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return found.fetchone() is not None

    def close(self) -> None:
        self._conn.close()

