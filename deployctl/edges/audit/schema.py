"""The audit schema: its tables, the append-only triggers and the ordered list of migrations.

Both backends keep the same append-only schema: ``attempts`` (written before an apply), ``outcomes``
(one per attempt, appended after it), ``outbox`` (one notification event per outcome, written
in the same transaction), ``sinks`` and ``deliveries`` (notification delivery attempts), and
``attempt_events`` (what happened between an attempt's apply and its verdict).
Nothing is ever updated or deleted; the database refuses it with triggers. The schema is
versioned in ``schema_version`` and migrated forward when a store is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployctl.edges.audit.chain import chain_existing_rows, chain_existing_verifications
from deployctl.edges.audit.views import DEPLOY_EVENTS_POSTGRES, DEPLOY_EVENTS_SQLITE
from deployctl.model.audit import PROVENANCE_FIELDS


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]
    backfill: Callable[[Any, Any], None] | None = None
    """Python run after the statements, in the same transaction, with (cursor, store): it rewrites rows
    that exist (SQL alone cannot hash them). The UPDATE triggers are lifted for it and put back after."""
    backfill_tables: tuple[str, ...] = ()
    """The tables whose UPDATE triggers are lifted for ``backfill``."""


ATTEMPT_COLUMNS = (
    "env",
    "app",
    "namespace",
    "workloads",
    *PROVENANCE_FIELDS,
    "started_at",
    "lock_holder",  # migration 3
    "review",  # migration 6
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
_EVENTS_TABLE = """CREATE TABLE attempt_events (
    attempt_id {id_type} NOT NULL REFERENCES attempts (id), seq INTEGER NOT NULL,
    at {time_type} NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (attempt_id, seq))"""
# Every key a REPLACE could collide on (its conflict resolution deletes the old row without
# firing DELETE triggers): the rowid and each UNIQUE constraint of the table.
_REPLACE_KEYS = {
    "attempts": "rowid = NEW.rowid",
    "outcomes": "attempt_id = NEW.attempt_id",
    "outbox": "rowid = NEW.rowid OR key = NEW.key",
    "sinks": "rowid = NEW.rowid OR name = NEW.name",
    "deliveries": (
        "rowid = NEW.rowid OR (outbox_id = NEW.outbox_id AND sink = NEW.sink AND attempt_no = NEW.attempt_no)"
    ),
}



def append_only_update_trigger_sqlite(table: str) -> str:
    """The SQLite trigger refusing UPDATE on ``table`` (migration 1's, re-created after a backfill)."""
    return f"""CREATE TRIGGER {table}_append_only_update BEFORE UPDATE ON {table}
                BEGIN SELECT RAISE(ABORT, 'the audit store is append-only'); END"""


_CHAINED_AT_7 = ("attempts", "outcomes")
CHAINED_TABLES = (*_CHAINED_AT_7, "verifications")
"""The tables the audit chain runs through: attempts and outcomes since schema 7, verifications since 9."""


def _chain_columns(seq_type: str, tables: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        f"ALTER TABLE {table} ADD COLUMN {column} {kind}"
        for table in tables
        for column, kind in (("chain_seq", seq_type), ("chain_prev", "TEXT"), ("chain_hash", "TEXT"),
                             ("chain_mac", "TEXT"))
    )  # fmt: skip


def _chain_indexes(tables: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"CREATE UNIQUE INDEX {table}_chain_seq ON {table} (chain_seq)" for table in tables)

CHAIN_VERSION = 7
"""The migration that starts the audit chain (edges/audit/chain.py)."""
VERIFICATION_CHAIN_VERSION = 9
"""The migration that chains the verifications table."""

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
        2,
        "SQLite refuses INSERT OR REPLACE over an existing row of an append-only table",
        sqlite=tuple(  # built from the constant table of keys above
            f"""CREATE TRIGGER {table}_append_only_replace BEFORE INSERT ON {table}
            WHEN EXISTS (SELECT 1 FROM {table} WHERE {existing})
            BEGIN SELECT RAISE(ABORT, 'the audit store is append-only: that row exists'); END"""  # noqa: S608
            for table, existing in _REPLACE_KEYS.items()
        ),
        # PostgreSQL has no REPLACE; ON CONFLICT DO UPDATE fires the UPDATE trigger of migration 1.
        postgres=(),
    ),
    Migration(
        3,
        "attempts.lock_holder: the environment lock holder of the run, to tell an interrupted run from a live one",
        sqlite=("ALTER TABLE attempts ADD COLUMN lock_holder TEXT",),
        postgres=("ALTER TABLE attempts ADD COLUMN lock_holder TEXT",),
    ),
    Migration(
        4,
        "deploy_events view: one row per finished deploy, stable columns (docs/analytics.md)",
        sqlite=(DEPLOY_EVENTS_SQLITE,),
        postgres=(DEPLOY_EVENTS_POSTGRES,),
    ),
    Migration(
        5,
        "attempt_events: what happened between an attempt's apply and its verdict (rollout events); append-only",
        sqlite=(
            _EVENTS_TABLE.format(id_type="INTEGER", time_type="TEXT"),
            *(
                f"""CREATE TRIGGER attempt_events_append_only_{op.lower()} BEFORE {op} ON attempt_events
                BEGIN SELECT RAISE(ABORT, 'the audit store is append-only'); END"""
                for op in ("UPDATE", "DELETE")
            ),
            """CREATE TRIGGER attempt_events_append_only_replace BEFORE INSERT ON attempt_events
            WHEN EXISTS (SELECT 1 FROM attempt_events WHERE rowid = NEW.rowid
                         OR (attempt_id = NEW.attempt_id AND seq = NEW.seq))
            BEGIN SELECT RAISE(ABORT, 'the audit store is append-only: that row exists'); END""",
        ),
        postgres=(
            _EVENTS_TABLE.format(id_type="BIGINT", time_type="TIMESTAMPTZ"),
            """CREATE TRIGGER attempt_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON attempt_events
            FOR EACH STATEMENT EXECUTE FUNCTION deployctl_append_only()""",
        ),
    ),
    Migration(
        6,
        "attempts.review: the pull request and the approvals that counted (require_approval: forge), as JSON",
        sqlite=("ALTER TABLE attempts ADD COLUMN review TEXT",),
        postgres=("ALTER TABLE attempts ADD COLUMN review TEXT",),
    ),
    Migration(
        CHAIN_VERSION,
        "the audit chain: attempts and outcomes carry chain_seq/prev/hash/mac (docs/audit.md); rows that "
        "existed are chained as found, and chain_start marks where the chain begins",
        sqlite=(
            *_chain_columns("INTEGER", _CHAINED_AT_7),
            *_chain_indexes(_CHAINED_AT_7),
            "CREATE TABLE chain_start (through_seq INTEGER NOT NULL, chained_at TEXT NOT NULL)",
            *(
                f"""CREATE TRIGGER chain_start_append_only_{op.lower()} BEFORE {op} ON chain_start
                BEGIN SELECT RAISE(ABORT, 'the audit store is append-only'); END"""
                for op in ("UPDATE", "DELETE")
            ),
            """CREATE TRIGGER chain_start_once BEFORE INSERT ON chain_start
            WHEN EXISTS (SELECT 1 FROM chain_start)
            BEGIN SELECT RAISE(ABORT, 'the audit store is append-only: the chain starts once'); END""",
        ),
        postgres=(
            *_chain_columns("BIGINT", _CHAINED_AT_7),
            *_chain_indexes(_CHAINED_AT_7),
            # ids are chosen under the chain lock (a row's hash covers its id), not by the identity
            "ALTER TABLE attempts ALTER COLUMN id SET GENERATED BY DEFAULT",
            "CREATE TABLE chain_start (through_seq BIGINT NOT NULL, chained_at TIMESTAMPTZ NOT NULL)",
            "CREATE UNIQUE INDEX chain_start_once ON chain_start ((true))",
            """CREATE TRIGGER chain_start_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON chain_start
                FOR EACH STATEMENT EXECUTE FUNCTION deployctl_append_only()""",
        ),
        backfill=chain_existing_rows,
        backfill_tables=_CHAINED_AT_7,
    ),
    Migration(
        8,
        "verifications: a deploy's verification against its metrics, its own append-only result tied to the attempt",
        sqlite=(
            """CREATE TABLE verifications (
                id INTEGER PRIMARY KEY AUTOINCREMENT, attempt_id INTEGER NOT NULL REFERENCES attempts (id),
                result TEXT NOT NULL, reason TEXT NOT NULL, checks TEXT NOT NULL, trigger TEXT NOT NULL,
                started_at TEXT NOT NULL, finished_at TEXT NOT NULL, recorded_at TEXT NOT NULL)""",
            "CREATE INDEX verifications_attempt ON verifications (attempt_id)",
            *(
                f"""CREATE TRIGGER verifications_append_only_{op.lower()} BEFORE {op} ON verifications
                BEGIN SELECT RAISE(ABORT, 'the audit store is append-only'); END"""
                for op in ("UPDATE", "DELETE")
            ),
            """CREATE TRIGGER verifications_append_only_replace BEFORE INSERT ON verifications
            WHEN EXISTS (SELECT 1 FROM verifications WHERE rowid = NEW.rowid)
            BEGIN SELECT RAISE(ABORT, 'the audit store is append-only: that row exists'); END""",
        ),
        postgres=(
            """CREATE TABLE verifications (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                attempt_id BIGINT NOT NULL REFERENCES attempts (id),
                result TEXT NOT NULL, reason TEXT NOT NULL, checks TEXT NOT NULL, trigger TEXT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ NOT NULL, recorded_at TIMESTAMPTZ NOT NULL)""",
            "CREATE INDEX verifications_attempt ON verifications (attempt_id)",
            """CREATE TRIGGER verifications_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON verifications
            FOR EACH STATEMENT EXECUTE FUNCTION deployctl_append_only()""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        VERIFICATION_CHAIN_VERSION,
        "verifications join the audit chain (chain_seq/prev/hash/mac); rows that existed are chained as found, "
        "and verification_chain_start records their places",
        sqlite=(
            *_chain_columns("INTEGER", ("verifications",)),
            *_chain_indexes(("verifications",)),
            "CREATE TABLE verification_chain_start (first_seq INTEGER NOT NULL, through_seq INTEGER NOT NULL, "
            "chained_at TEXT NOT NULL)",
            *(
                f"""CREATE TRIGGER verification_chain_start_append_only_{op.lower()} BEFORE {op}
                ON verification_chain_start BEGIN SELECT RAISE(ABORT, 'the audit store is append-only'); END"""
                for op in ("UPDATE", "DELETE")
            ),
            """CREATE TRIGGER verification_chain_start_once BEFORE INSERT ON verification_chain_start
            WHEN EXISTS (SELECT 1 FROM verification_chain_start)
            BEGIN SELECT RAISE(ABORT, 'the audit store is append-only: verifications join the chain once'); END""",
        ),
        postgres=(
            *_chain_columns("BIGINT", ("verifications",)),
            *_chain_indexes(("verifications",)),
            # ids are chosen under the chain lock (a row's hash covers its id), not by the identity
            "ALTER TABLE verifications ALTER COLUMN id SET GENERATED BY DEFAULT",
            "CREATE TABLE verification_chain_start (first_seq BIGINT NOT NULL, through_seq BIGINT NOT NULL, "
            "chained_at TIMESTAMPTZ NOT NULL)",
            "CREATE UNIQUE INDEX verification_chain_start_once ON verification_chain_start ((true))",
            """CREATE TRIGGER verification_chain_start_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
                ON verification_chain_start FOR EACH STATEMENT EXECUTE FUNCTION deployctl_append_only()""",
        ),
        backfill=chain_existing_verifications,
        backfill_tables=("verifications",),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version
