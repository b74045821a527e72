"""The audit history cannot be rewritten: SQLite refuses REPLACE, PostgreSQL's writer role may only append."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.schema import SCHEMA_VERSION
from deployctl.edges.audit.url import open_store
from deployctl.model.audit import AttemptEvent, AuditError, Delivery
from deployctl.model.verification import Verification, VerifyResult
from tests.fixtures.auditdata import T0, make_attempt

pytestmark = pytest.mark.integration

# One statement per append-only table, each colliding with the row the fixture wrote.
REPLACES = {
    "attempts": "INSERT OR REPLACE INTO attempts SELECT * FROM attempts WHERE id = 1",
    "outcomes": "REPLACE INTO outcomes (attempt_id, result, error, digest, finished_at, recorded_at) "
    "VALUES (1, 'succeeded', NULL, NULL, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')",
    "outbox": "INSERT OR REPLACE INTO outbox (id, key, attempt_id, payload, created_at) "
    "SELECT id, key, attempt_id, '{}', created_at FROM outbox WHERE id = 1",
    "sinks": "INSERT OR REPLACE INTO sinks (name, first_outbox_id, added_at) VALUES ('ops', 0, 'x')",
    "deliveries": "INSERT OR REPLACE INTO deliveries "
    "(outbox_id, sink, attempt_no, attempted_at, ok, error, next_attempt_at) "
    "VALUES (1, 'ops', 1, '2024-01-01T00:00:00.000000Z', 1, NULL, NULL)",
    "attempt_events": "INSERT OR REPLACE INTO attempt_events (attempt_id, seq, at, kind, detail) "
    "VALUES (1, 1, '2024-01-01T00:00:00.000000Z', 'verdict', 'succeeded: forged')",
    "verifications": "INSERT OR REPLACE INTO verifications SELECT id, attempt_id, 'verified', 'forged', checks, "
    "trigger, started_at, finished_at, recorded_at, chain_seq, chain_prev, chain_hash, chain_mac FROM verifications "
    "WHERE id = 1",
}


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    store = open_store(f"sqlite://{path}")
    store.register_sink("ops")
    attempt_id = store.start(make_attempt())
    store.add_events([AttemptEvent(attempt_id, 1, T0, "stalled", "ProgressDeadlineExceeded")])
    store.finish(attempt_id, result="failed", error="rollout timed out")
    passed = store.start(make_attempt(new_sha="b" * 40))
    store.finish(passed, result="succeeded")
    store.record_verification(Verification(attempt_id=passed, env="staging", app="web", sha="b" * 40,
                                           result=VerifyResult.FAILED, reason="errors: x = 0.3", checks=(),
                                           started_at=T0, finished_at=T0 + timedelta(minutes=1)))
    store.record_delivery(
        Delivery(outbox_id=1, sink="ops", attempt_no=1, attempted_at=T0, ok=False, error="503",
                 next_attempt_at=T0 + timedelta(minutes=1))  # fmt: skip
    )
    store.close()
    return path


def _dump(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [row for table in REPLACES for row in conn.execute(f"SELECT '{table}', * FROM {table}")]
    finally:
        conn.close()


@pytest.mark.parametrize("table", sorted(REPLACES))
def test_sqlite_refuses_insert_or_replace_over_an_existing_row(sqlite_file: Path, table: str) -> None:
    before = _dump(sqlite_file)
    conn = sqlite3.connect(sqlite_file)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(REPLACES[table])
        conn.commit()
    finally:
        conn.close()
    assert _dump(sqlite_file) == before


def test_recording_the_same_delivery_twice_still_keeps_one_row(sqlite_file: Path) -> None:
    store = open_store(f"sqlite://{sqlite_file}")
    try:
        again = Delivery(outbox_id=1, sink="ops", attempt_no=1, attempted_at=T0, ok=True, error=None,
                         next_attempt_at=None)  # fmt: skip
        store.record_delivery(again)
        [delivery] = store.deliveries(sink="ops")
        assert (delivery.ok, delivery.error) == (False, "503")
    finally:
        store.close()


# --- PostgreSQL: a migration role owns the schema, the writer role may only INSERT and SELECT ---------

OWNER_SETUP = (  # docs/audit.md, "Two roles on PostgreSQL", run by the owner role
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO {writer}",
    "GRANT USAGE ON SCHEMA public TO {writer}",
)
AFTER_MIGRATE = ("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {writer}",)


class Roles:
    def __init__(self, base: str, db: str, owner: str, writer: str) -> None:
        self.base, self.db, self.owner, self.writer = base, db, owner, writer

    def url(self, role: str) -> str:
        return f"postgresql://{role}@{self.base.split('@', 1)[1].rsplit('/', 1)[0]}/{self.db}"


@pytest.fixture
def roles(postgres_url: str) -> Iterator[Roles]:
    tag = uuid.uuid4().hex[:8]
    r = Roles(postgres_url, f"deploys_{tag}", f"owner_{tag}", f"writer_{tag}")
    with psycopg.connect(postgres_url, autocommit=True) as su:
        su.execute(f"CREATE ROLE {r.owner} LOGIN")  # type: ignore[arg-type]
        su.execute(f"CREATE ROLE {r.writer} LOGIN")  # type: ignore[arg-type]
        su.execute(f"CREATE DATABASE {r.db} OWNER {r.owner}")  # type: ignore[arg-type]
    yield r
    with psycopg.connect(postgres_url, autocommit=True) as su:
        su.execute(f"DROP DATABASE IF EXISTS {r.db} WITH (FORCE)")  # type: ignore[arg-type]
        su.execute(f"DROP ROLE IF EXISTS {r.writer}")  # type: ignore[arg-type]
        su.execute(f"DROP ROLE IF EXISTS {r.owner}")  # type: ignore[arg-type]


def _as(roles: Roles, role: str, statements: tuple[str, ...]) -> None:
    with psycopg.connect(roles.url(role), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.format(writer=roles.writer))  # type: ignore[arg-type]


def test_postgres_writer_role_appends_but_cannot_rewrite_or_drop_the_triggers(roles: Roles) -> None:
    _as(roles, roles.owner, OWNER_SETUP)
    result = CliRunner().invoke(main, ["audit", "migrate", "--audit", roles.url(roles.owner)])
    assert result.exit_code == 0, result.output
    assert result.output == f"schema version {SCHEMA_VERSION}\n"
    _as(roles, roles.owner, AFTER_MIGRATE)

    writer = open_store(roles.url(roles.writer))
    try:
        writer.register_sink("ops")
        attempt_id = writer.start(make_attempt())
        writer.add_events([AttemptEvent(attempt_id, 1, T0, "verdict", "succeeded")])
        writer.finish(attempt_id, result="succeeded")
        writer.record_delivery(
            Delivery(outbox_id=1, sink="ops", attempt_no=1, attempted_at=T0, ok=True, error=None,
                     next_attempt_at=None)  # fmt: skip
        )
        assert [r.result for r in writer.query()] == ["succeeded"]
    finally:
        writer.close()

    refused = [
        "DROP TRIGGER attempts_append_only ON attempts",
        "ALTER TABLE outcomes DISABLE TRIGGER outcomes_append_only",
        "DROP FUNCTION deployctl_append_only() CASCADE",
        "UPDATE attempts SET env = 'staging'",
        "DELETE FROM outcomes",
        "TRUNCATE outbox",
        "INSERT INTO outcomes (attempt_id, result, finished_at, recorded_at) VALUES (1, 'failed', now(), now()) "
        "ON CONFLICT (attempt_id) DO UPDATE SET result = 'failed'",
        "DROP TABLE deliveries",
        "ALTER TABLE attempts ADD COLUMN x TEXT",
        "UPDATE attempt_events SET detail = 'forged'",
        "DELETE FROM attempt_events",
        "UPDATE verifications SET result = 'verified'",
        "DELETE FROM verifications",
    ]
    with psycopg.connect(roles.url(roles.writer), autocommit=True) as conn:
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]
        # one per append-only table (verification_chain_start since schema 9)
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%append_only'").fetchone() == (9,)
        assert conn.execute("SELECT result FROM outcomes").fetchall() == [("succeeded",)]


def test_postgres_writer_role_on_an_unmigrated_database_is_told_to_run_audit_migrate(roles: Roles) -> None:
    _as(roles, roles.owner, ("GRANT USAGE ON SCHEMA public TO {writer}",))
    with pytest.raises(AuditError, match=r"may not create or migrate the schema .*deployctl audit migrate"):
        open_store(roles.url(roles.writer))
