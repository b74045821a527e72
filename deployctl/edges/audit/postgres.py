"""The shared audit store: a PostgreSQL database (psycopg 3)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deployctl.edges.audit.chain import AuditKeys
from deployctl.edges.audit.schema import SCHEMA_VERSION, Migration
from deployctl.edges.audit.sql import SqlStore
from deployctl.model.audit import AuditError, utc
from deployctl.redact import redact

if TYPE_CHECKING:
    import psycopg

_PG_MIGRATION_LOCK = 0x6465706C6F79  # "deploy": serialises concurrent migrations
_PG_CHAIN_LOCK = 0x636861696E  # "chain": serialises the writers of the audit chain (edges/audit/chained.py)


class PostgresStore(SqlStore):
    """The shared store: a PostgreSQL database (psycopg 3), one transaction per append."""

    placeholder = "%s"
    prefix_match = "LIKE"
    prefix_wildcard = "%"

    def __init__(
        self, url: str, *, connect: Callable[..., psycopg.Connection[Any]] | None = None,
        keys: AuditKeys | None = None,
    ) -> None:  # fmt: skip
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise AuditError("audit: PostgreSQL needs psycopg; install deployctl[postgres]") from exc
        self.url = _redact(url)
        self.keys = keys
        self._lock = threading.RLock()
        self._psycopg = psycopg
        try:
            self._conn = (connect or psycopg.connect)(url, autocommit=True)
            with self._write() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
                self._open_schema(cur, where=self.url, time_type="TIMESTAMPTZ")
        except psycopg.Error as exc:
            raise AuditError(f"audit: cannot open PostgreSQL store {self.url}: {_redact(str(exc))}") from exc
        except AuditError as exc:
            if isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
                raise AuditError(
                    f"audit: cannot open PostgreSQL store {self.url}: {exc.__cause__}; this role may "
                    f"not create or migrate the schema (version {SCHEMA_VERSION}): run "
                    "`deployctl audit migrate` once with the owner role's URL (docs/audit.md)"
                ) from exc
            raise

    def _migration_statements(self, migration: Migration) -> Sequence[str]:
        return migration.postgres

    def _lock_chain(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_CHAIN_LOCK,))

    @contextmanager
    def _updates_allowed(self, cur: Any, tables: Sequence[str]) -> Iterator[None]:
        for table in tables:
            cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
        yield
        for table in tables:
            cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_append_only")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        try:
            with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as exc:
            raise AuditError(f"audit: write to {self.url} failed: {_redact(str(exc))}") from exc

    def _read(self) -> Any:
        return self._conn

    def _db_errors(self) -> type[Exception]:
        return self._psycopg.Error

    def _enc_time(self, value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)

    def _dec_time(self, value: Any) -> datetime | None:
        return None if value is None else utc(value)

    def _has_table(self, cur: Any, name: str) -> bool:
        return cur.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None

    def close(self) -> None:
        self._conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return redact(url)
