"""The ``deploy_events`` view in both audit stores, and the joins docs/analytics.md documents,
run verbatim on a real PostgreSQL with a product table the test creates."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployctl.app.history import CHAIN_FIELDS, CheckedRecord
from deployctl.edges.audit.url import open_store
from deployctl.edges.audit.views import DEPLOY_EVENTS_COLUMNS
from deployctl.model.audit import EVENT_FIELDS, AuditStore
from tests.fixtures.auditdata import make_attempt, sha

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
CHANGE = datetime(2024, 11, 24, tzinfo=UTC)


def documented_sql(name: str) -> str:
    """The SQL block that follows ``<!-- sql: name -->`` in docs/analytics.md."""
    match = re.search(rf"<!-- sql: {name} -->\n```sql\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"docs/analytics.md has no sql block {name!r}"
    return match.group(1)


def deploy(
    store: AuditStore, app: str, at: datetime, *, result: str = "succeeded", env: str = "production", **more: Any
) -> int:
    attempt_id = store.start(make_attempt(app=app, env=env, started_at=at - timedelta(seconds=30), **more))
    store.finish(attempt_id, result=result, finished_at=at)
    return attempt_id


def history(store: AuditStore) -> dict[str, int]:
    """A small deploy history around the change of 2024-11-24."""
    ids = {
        "web-first": deploy(store, "web", CHANGE - timedelta(days=5), previous_sha=None),
        "web-feature": deploy(
            store, "web", CHANGE - timedelta(hours=20), app_commit_summary="Domains: new verification flow\n\nlong body"
        ),
        "checkout-fix": deploy(store, "checkout", CHANGE - timedelta(days=2, hours=3)),
        "checkout-failed": deploy(store, "checkout", CHANGE - timedelta(days=1), result="failed"),
        "search": deploy(store, "search", CHANGE - timedelta(hours=5)),
        "web-staging": deploy(store, "web", CHANGE - timedelta(hours=4), env="staging"),
        "web-rollback": deploy(
            store, "web", CHANGE + timedelta(hours=2),
            file_commit_summary=f"Roll back web in production to {sha('1')[:12]} (from {sha('2')[:12]})",
        ),  # fmt: skip
    }
    store.start(make_attempt(app="web", started_at=CHANGE + timedelta(hours=3)))  # still running: no row
    return ids


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("postgres_db"))


@pytest.fixture
def store(store_url: str) -> Iterator[AuditStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def select(url: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            cur = conn.execute(sql)
            return [d[0] for d in cur.description], cur.fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pg:
        cur = pg.execute(sql)  # type: ignore[arg-type]
        return [d.name for d in cur.description or []], cur.fetchall()


def test_one_row_per_finished_deploy_with_the_documented_columns(store_url: str, store: AuditStore) -> None:
    ids = history(store)
    columns, rows = select(store_url, "SELECT * FROM deploy_events ORDER BY attempt_id")
    assert tuple(columns) == DEPLOY_EVENTS_COLUMNS
    section = DOC.read_text().split("## The `deploy_events` view")[1].split("### Joining")[0]
    documented = re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)?(?:, `([a-z_]+)`)? \|", section, re.M)
    in_doc = [c for row in documented for c in row if c]
    assert in_doc == list(DEPLOY_EVENTS_COLUMNS)
    by_id = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
    assert set(by_id) == set(ids.values())  # the running attempt has no row
    assert by_id[ids["web-first"]]["change"] == "deployed"
    assert by_id[ids["web-feature"]]["change"] == "upgraded"
    assert by_id[ids["web-rollback"]]["change"] == "rolledback"
    feature = by_id[ids["web-feature"]]
    assert feature["commit_message"] == "Domains: new verification flow"
    assert feature["duration_seconds"] == pytest.approx(30.0, abs=0.01)
    assert json.loads(feature["approvers"]) == ["bob@example.com"]
    assert by_id[ids["checkout-failed"]]["result"] == "failed"


def test_postgres_view_column_types_are_stable(postgres_db: str) -> None:
    open_store(postgres_db).close()
    _, rows = select(
        postgres_db,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'deploy_events' ORDER BY ordinal_position",
    )
    types = dict(rows)
    assert types["attempt_id"] == "bigint"
    assert types["started_at"] == types["finished_at"] == "timestamp with time zone"
    assert types["duration_seconds"] == "double precision"
    assert {types[c] for c in DEPLOY_EVENTS_COLUMNS if c not in ("attempt_id", "started_at", "finished_at",
            "duration_seconds")} == {"text"}  # fmt: skip


def test_an_existing_version_1_store_gains_the_view(tmp_path: Path) -> None:
    from deployctl.edges.audit.schema import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)")
    for statement in MIGRATIONS[0].sqlite:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 'v1', '2024-01-01T00:00:00.000000Z')")
    conn.commit()
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        deploy(store, "web", CHANGE)
    finally:
        store.close()
    _, rows = select(f"sqlite:///{path}", "SELECT app, change FROM deploy_events")
    assert rows == [("web", "upgraded")]


def test_the_documented_product_joins_run_on_postgres(postgres_db: str) -> None:
    import psycopg

    store = open_store(postgres_db)
    try:
        history(store)
    finally:
        store.close()
    with psycopg.connect(postgres_db, autocommit=True) as pg:
        pg.execute("CREATE TABLE product_interactions (occurred_at timestamptz NOT NULL, kind text NOT NULL)")
        rows = []
        for hour in range(-72, 24):  # confirmed interactions drop after the change
            at = CHANGE + timedelta(hours=hour, minutes=10)
            rows += [(at, "confirmed")] * (10 if hour < 0 else 4) + [(at, "viewed")] * 3
        with pg.cursor() as cur:
            cur.executemany("INSERT INTO product_interactions VALUES (%s, %s)", rows)
        hourly = pg.execute(documented_sql("hourly")).fetchall()  # type: ignore[arg-type]
        before = pg.execute(documented_sql("before-change")).fetchall()  # type: ignore[arg-type]
    assert len(hourly) == 96
    by_hour = {row[0]: row[1:] for row in hourly}
    feature_hour = CHANGE - timedelta(hours=20)
    assert by_hour[feature_hour][0] == 10 and by_hour[feature_hour][1] == 1
    assert "web 2222222: Domains: new verification flow" in by_hour[feature_hour][2]
    assert by_hour[CHANGE + timedelta(hours=2)][:2] == (4, 1)  # the rollback, after the change
    assert sum(row[2] for row in hourly) == 4  # production successes in the metric's range
    assert [(row[1], row[5]) for row in before] == [
        ("checkout", "Fix checkout rounding"),
        ("web", "Domains: new verification flow"),
    ]  # not search (another app), not the failure, not staging, not after the change


def test_the_bigquery_schema_matches_the_export() -> None:
    schema = json.loads((DOC.parent / "schemas" / "deploy_events.bigquery.json").read_text())
    assert [c["name"] for c in schema] == [*EVENT_FIELDS, *CHAIN_FIELDS]  # what `events export` writes
    from deployctl.model.audit import AuditRecord

    record = AuditRecord(1, make_attempt(), "succeeded", None, CHANGE, 3.0, None)
    event = CheckedRecord(record).as_dict()
    kinds = {"STRING": str, "INTEGER": int, "FLOAT": float, "TIMESTAMP": str, "BOOLEAN": bool}
    for column in schema:
        value = event[column["name"]]
        if column["mode"] == "REPEATED":
            assert isinstance(value, list)
        elif value is not None:
            assert isinstance(value, kinds[column["type"]]), column
        else:
            assert column["mode"] == "NULLABLE", column
