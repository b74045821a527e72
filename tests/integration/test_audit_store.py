"""The audit store against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from deployctl.edges.audit import sql as auditsql
from deployctl.edges.audit.schema import SCHEMA_VERSION
from deployctl.edges.audit.sql import INTERRUPTED_ERROR
from deployctl.edges.audit.sqlite import SqliteStore
from deployctl.edges.audit.url import open_store
from deployctl.errors import InvalidInputError
from deployctl.model.audit import MAX_EVENTS_PER_ATTEMPT, AttemptEvent, AuditError, AuditStore, Finish
from tests.fixtures.auditdata import T0, make_attempt, sha

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/audit.db"
    return str(request.getfixturevalue("postgres_db"))


@pytest.fixture
def store(store_url: str) -> Iterator[AuditStore]:
    s = open_store(store_url)
    yield s
    s.close()


def test_started_attempt_reads_back_with_every_field_and_result_started(store: AuditStore) -> None:
    attempt = make_attempt()
    attempt_id = store.start(attempt)
    [record] = store.query()
    assert record.id == attempt_id
    assert record.attempt == attempt
    assert record.result == "started"
    assert (record.finished_at, record.duration_seconds, record.error) == (None, None, None)
    assert record.release == attempt.deploy_commit


def test_finish_appends_outcome_with_duration_error_and_digest(store: AuditStore) -> None:
    attempt_id = store.start(make_attempt(digest="sha256:before"))
    store.finish(
        attempt_id, result="failed", error="rollout timed out", digest="sha256:after",
        finished_at=T0 + timedelta(seconds=42.5),
    )  # fmt: skip
    [record] = store.query()
    assert record.result == "failed"
    assert record.error == "rollout timed out"
    assert record.digest == "sha256:after"
    assert record.finished_at == T0 + timedelta(seconds=42.5)
    assert record.duration_seconds == 42.5


def test_a_second_outcome_for_the_same_attempt_is_refused(store: AuditStore) -> None:
    attempt_id = store.start(make_attempt())
    store.finish(attempt_id, result="succeeded")
    with pytest.raises(AuditError, match="already has the outcome 'succeeded'"):
        store.finish(attempt_id, result="failed")
    assert [r.result for r in store.query()] == ["succeeded"]


def test_finishing_an_unknown_attempt_is_an_error(store: AuditStore) -> None:
    with pytest.raises(AuditError, match="no attempt with id 999"):
        store.finish(999, result="succeeded")


def test_an_unknown_result_is_rejected_before_writing(store: AuditStore) -> None:
    attempt_id = store.start(make_attempt())
    with pytest.raises(InvalidInputError, match="result 'ok' is not one of"):
        store.finish(attempt_id, result="ok")
    assert store.query()[0].result == "started"


def test_close_interrupted_closes_every_attempt_without_outcome_once(store: AuditStore) -> None:
    done = store.start(make_attempt(app="api"))
    store.finish(done, result="succeeded")
    left = [store.start(make_attempt(app=f"app{i}")) for i in range(3)]
    assert store.close_interrupted() == left
    assert store.close_interrupted() == []
    by_id = {r.id: r for r in store.query()}
    assert by_id[done].result == "succeeded"
    for attempt_id in left:
        assert by_id[attempt_id].result == "interrupted"
        assert by_id[attempt_id].error == INTERRUPTED_ERROR
        assert by_id[attempt_id].finished_at is not None


def test_close_interrupted_leaves_attempts_started_after_the_cutoff(store: AuditStore) -> None:
    old = store.start(make_attempt(started_at=T0))
    recent = store.start(make_attempt(started_at=T0 + timedelta(hours=1)))
    assert store.close_interrupted(older_than=T0 + timedelta(minutes=30)) == [old]
    assert {r.id: r.result for r in store.query()} == {old: "interrupted", recent: "started"}


def test_open_attempts_lists_those_without_an_outcome_and_close_by_ids_closes_only_those(store: AuditStore) -> None:
    done = store.start(make_attempt(env="staging", app="api"))
    store.finish(done, result="succeeded")
    api = store.start(make_attempt(env="staging", app="api"))
    web = store.start(make_attempt(env="staging", app="web"))
    prod = store.start(make_attempt(env="production", app="api"))
    assert [r.id for r in store.open_attempts(envs=["staging"])] == [api, web]
    assert [r.id for r in store.open_attempts(envs=["staging", "production"])] == [api, web, prod]
    assert store.open_attempts(envs=[]) == []
    assert store.close_interrupted(ids=[web, done]) == [web]  # one already ended: left as it ended
    assert store.close_interrupted(ids=[]) == []
    assert {r.id: r.result for r in store.query()} == {done: "succeeded", api: "started", web: "interrupted",
                                                       prod: "started"}
    assert [r.id for r in store.open_attempts(envs=["staging"])] == [api]


def test_query_filters_combine_and_return_newest_first(store: AuditStore) -> None:
    ids = {}
    for hour, (env, app, new) in enumerate(
        [("staging", "web", "a1"), ("production", "web", "a2"), ("production", "api", "b3"),
         ("production", "web", "c4")]
    ):  # fmt: skip
        ids[new] = store.start(
            make_attempt(env=env, app=app, new_sha=sha(new), deploy_commit=sha(f"{hour}e"),
                         started_at=T0 + timedelta(hours=hour))
        )  # fmt: skip
    assert [r.id for r in store.query()] == [ids["c4"], ids["b3"], ids["a2"], ids["a1"]]
    assert [r.id for r in store.query(env="production", app="web")] == [ids["c4"], ids["a2"]]
    assert [r.id for r in store.query(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2))] == [
        ids["b3"],
        ids["a2"],
    ]
    assert [r.id for r in store.query(sha="A2A2")] == [ids["a2"]]
    assert [r.id for r in store.query(sha=sha("2e")[:8])] == [ids["b3"]]  # release prefix
    assert [r.id for r in store.query(limit=2)] == [ids["c4"], ids["b3"]]
    assert store.query(app="nope") == []


def test_a_sha_filter_that_is_not_hex_is_an_input_error(store: AuditStore) -> None:
    with pytest.raises(InvalidInputError, match="at least 4 hex digits"):
        store.query(sha="xyz%")


def test_each_outcome_appends_one_outbox_event_with_a_unique_key(store: AuditStore) -> None:
    store.register_sink("hook")
    a, b = store.start(make_attempt()), store.start(make_attempt(app="api"))
    store.finish(a, result="succeeded")
    store.close_interrupted()
    events = store.pending_events("hook", now=T0 + timedelta(days=10000))
    assert [e.attempt_id for e in events] == [a, b]
    assert len({e.key for e in events}) == 2
    assert events[0].payload["idempotency_key"] == events[0].key
    assert events[0].payload["result"] == "succeeded"
    assert events[1].payload["result"] == "interrupted"


def test_outcome_and_outbox_event_are_one_transaction(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempt_id = store.start(make_attempt())

    def broken(record: object) -> dict[str, object]:
        raise RuntimeError("payload cannot be built")

    monkeypatch.setattr(auditsql, "record_to_event", broken)
    with pytest.raises(RuntimeError):
        store.finish(attempt_id, result="succeeded")
    monkeypatch.undo()
    assert store.query()[0].result == "started"  # the outcome row was rolled back with the outbox row
    store.finish(attempt_id, result="succeeded")
    assert store.query()[0].result == "succeeded"


def test_the_database_refuses_updates_and_deletes(store_url: str, store: AuditStore) -> None:
    attempt_id = store.start(make_attempt())
    store.finish(attempt_id, result="succeeded")
    statements = ["UPDATE attempts SET env = 'x'", "DELETE FROM attempts", "DELETE FROM outcomes",
                  "UPDATE outcomes SET result = 'failed'", "DELETE FROM outbox"]  # fmt: skip
    for statement in statements:
        if store_url.startswith("sqlite"):
            conn = sqlite3.connect(store_url.removeprefix("sqlite://"))
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
            conn.close()
        else:
            with psycopg.connect(store_url, autocommit=True) as pg, pytest.raises(
                psycopg.errors.RaiseException, match="append-only"
            ):
                pg.execute(statement)  # type: ignore[arg-type]
    assert store.query()[0].result == "succeeded"


def test_reopening_keeps_records_and_schema_version(store_url: str, store: AuditStore) -> None:
    store.start(make_attempt())
    store.close()
    again = open_store(store_url)
    try:
        assert len(again.query()) == 1
        assert again.schema_version() == SCHEMA_VERSION  # type: ignore[attr-defined]
    finally:
        again.close()


def test_sqlite_store_is_wal_with_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    try:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    finally:
        store.close()


def test_sqlite_store_from_a_newer_deployctl_is_refused(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("INSERT INTO schema_version VALUES (99, 'future', '2030-01-01T00:00:00.000000Z')")
    conn.commit()
    conn.close()
    with pytest.raises(AuditError, match="schema version 99, newer than this deployctl"):
        SqliteStore(tmp_path / "a.db")


def test_reading_a_missing_sqlite_file_without_create_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit database at .*missing.db; pass --audit URL"):
        open_store(f"sqlite://{tmp_path}/missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_unreachable_postgres_is_an_audit_error() -> None:
    with pytest.raises(AuditError, match="cannot open PostgreSQL store postgresql://u:\\*\\*\\*@127.0.0.1:1/x"):
        open_store("postgresql://u:secret@127.0.0.1:1/x?connect_timeout=2")


def test_records_keep_naive_times_as_local_time(store: AuditStore) -> None:
    local = T0.astimezone().replace(tzinfo=None)
    store.start(replace(make_attempt(), started_at=local))
    assert store.query()[0].attempt.started_at == T0


# --- batches: one reconcile wave's attempts, then its outcomes, each in one transaction ------------


def test_start_many_returns_ids_in_input_order(store: AuditStore) -> None:
    attempts = [make_attempt(app=f"app{i}", started_at=T0 + timedelta(seconds=i)) for i in range(5)]
    ids = store.start_many(attempts)
    assert len(ids) == len(set(ids)) == 5
    by_id = {r.id: r for r in store.query()}
    assert [by_id[i].attempt for i in ids] == attempts
    assert {r.result for r in by_id.values()} == {"started"}


def test_batches_of_nothing_write_nothing(store: AuditStore) -> None:
    assert store.start_many([]) == []
    store.finish_many([])
    assert store.query() == []


def test_a_batch_of_attempts_with_one_the_database_refuses_writes_none(store: AuditStore) -> None:
    broken = replace(make_attempt(app="api"), namespace=None)  # NOT NULL in the schema
    with pytest.raises(AuditError, match="write to .* failed"):
        store.start_many([make_attempt(app="web"), broken, make_attempt(app="db")])
    assert store.query() == []


def test_finish_many_appends_every_outcome_with_its_outbox_event(store: AuditStore) -> None:
    store.register_sink("hook")
    web, api, db = store.start_many([make_attempt(app=a) for a in ("web", "api", "db")])
    store.finish_many(
        [
            Finish(api, "failed", error="rollout timed out", finished_at=T0 + timedelta(seconds=30)),
            Finish(web, "succeeded", digest="sha256:web", finished_at=T0 + timedelta(seconds=10)),
            Finish(db, "blocked", error="frozen"),
        ]
    )
    by_id = {r.id: r for r in store.query()}
    assert (by_id[web].result, by_id[web].digest, by_id[web].duration_seconds) == (
        "succeeded",
        "sha256:web",
        10,
    )
    assert (by_id[api].result, by_id[api].error, by_id[api].duration_seconds) == (
        "failed",
        "rollout timed out",
        30,
    )
    assert (by_id[db].result, by_id[db].error) == ("blocked", "frozen")
    assert by_id[db].finished_at is not None
    events = store.pending_events("hook", now=T0 + timedelta(days=10000))
    assert [(e.attempt_id, e.payload["result"]) for e in events] == [
        (api, "failed"),
        (web, "succeeded"),
        (db, "blocked"),
    ]
    assert len({e.key for e in events}) == 3


def test_a_batch_with_an_attempt_already_finished_writes_nothing_and_names_it(store: AuditStore) -> None:
    store.register_sink("hook")
    a, b, c = store.start_many([make_attempt(app=x) for x in ("a", "b", "c")])
    store.finish(b, result="succeeded")
    with pytest.raises(
        AuditError,
        match=f"attempt {b} already has the outcome 'succeeded'.*none of the 3 outcomes in this batch was written",
    ):
        store.finish_many([Finish(a, "succeeded"), Finish(b, "failed"), Finish(c, "succeeded")])
    assert {r.id: r.result for r in store.query()} == {a: "started", b: "succeeded", c: "started"}
    assert [e.attempt_id for e in store.pending_events("hook", now=T0 + timedelta(days=10000))] == [b]
    store.finish_many([Finish(a, "succeeded"), Finish(c, "failed")])  # the good ones can be retried
    assert {r.id: r.result for r in store.query()} == {a: "succeeded", b: "succeeded", c: "failed"}


def test_a_batch_with_an_unknown_attempt_writes_nothing_and_names_it(store: AuditStore) -> None:
    [a] = store.start_many([make_attempt()])
    with pytest.raises(AuditError, match="no attempt with id 999 .*none of the 2 outcomes"):
        store.finish_many([Finish(a, "succeeded"), Finish(999, "succeeded")])
    assert store.query()[0].result == "started"


def test_a_batch_giving_one_attempt_two_outcomes_writes_nothing(store: AuditStore) -> None:
    [a] = store.start_many([make_attempt()])
    with pytest.raises(AuditError, match=f"attempt {a} has two outcomes in one batch"):
        store.finish_many([Finish(a, "succeeded"), Finish(a, "failed")])
    assert store.query()[0].result == "started"


def test_a_batch_whose_outbox_event_cannot_be_built_writes_no_outcome(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = store.start_many([make_attempt(app=x) for x in ("a", "b")])
    calls = []

    def second_fails(record: object) -> dict[str, object]:
        calls.append(record)
        if len(calls) == 2:
            raise RuntimeError("payload cannot be built")
        return {}

    monkeypatch.setattr(auditsql, "record_to_event", second_fails)
    with pytest.raises(RuntimeError):
        store.finish_many([Finish(i, "succeeded") for i in ids])
    monkeypatch.undo()
    assert {r.result for r in store.query()} == {"started"}  # the first outcome was rolled back too


def test_a_sqlite_batch_is_one_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        ids = store.start_many([make_attempt(app=f"app{i}") for i in range(50)])
        store.finish_many([Finish(i, "succeeded") for i in ids])
    finally:
        store._conn.set_trace_callback(None)
        store.close()
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"] * 2


def test_get_reads_one_attempt_by_id_and_none_for_an_unknown_id(store: AuditStore) -> None:
    first = store.start(make_attempt())
    second = store.start(make_attempt(app="api"))
    store.finish(second, result="failed", error="rollout timed out")
    record = store.get(second)
    assert record is not None and record.id == second and record.attempt.app == "api"
    assert record.result == "failed" and record.error == "rollout timed out"
    assert store.get(first) is not None and store.get(first).result == "started"  # type: ignore[union-attr]
    assert store.get(second + 100) is None


def test_rollout_events_read_back_in_order_bounded_and_append_only(store: AuditStore, store_url: str) -> None:
    attempt_id = store.start(make_attempt())
    events = [AttemptEvent(attempt_id, seq, T0 + timedelta(seconds=seq), "progress", f"{seq}/3 ready")
              for seq in range(1, MAX_EVENTS_PER_ATTEMPT + 11)]
    store.add_events(events[:5])
    store.add_events(events[5:])
    back = store.events_of(attempt_id)
    assert len(back) == MAX_EVENTS_PER_ATTEMPT  # the bound holds in the store whoever writes
    assert back[:3] == events[:3]  # times, kinds and details as written
    assert store.events_of(attempt_id + 1) == []
    other = store.start(make_attempt(app="api"))
    store.add_events([replace(events[0], attempt_id=other)])
    with pytest.raises(AuditError):  # the same row twice is refused: the store is append-only
        store.add_events([replace(events[0], attempt_id=other, detail="rewritten")])
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite://"))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE attempt_events SET detail = 'edited'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM attempt_events")
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as conn, pytest.raises(psycopg.Error, match="append-only"):
            conn.execute("UPDATE attempt_events SET detail = 'edited'")


def test_a_verification_is_its_own_record_beside_the_rollout_with_an_outbox_event(store: AuditStore) -> None:
    from deployctl.model.verification import CheckOutcome, Measurement, Verification

    store.register_sink("chat")
    rolled = store.start(make_attempt(new_sha=sha("a")))
    store.finish(rolled, result="succeeded")
    failed = store.start(make_attempt(new_sha=sha("b")))
    store.finish(failed, result="failed", error="timed out")
    check = CheckOutcome(name="errors", kind="query", query='x{app="web"}', wanted="result < 0.01", failure_limit=0,
                         measurements=(Measurement(T0, 0.3, False, "0.3 does not meet result < 0.01"),))
    verification = Verification(attempt_id=rolled, env="staging", app="web", sha=sha("a"),
                                result="verification-failed", reason="errors: x = 0.3", checks=(check,),
                                started_at=T0, finished_at=T0 + timedelta(seconds=30), trigger="ci")
    new_id = store.record_verification(verification)
    (back,) = store.verifications(app="web")
    assert back.id == new_id and back.checks == (check,) and back.result == "verification-failed"
    assert store.verifications(attempt_ids=[failed]) == [] and store.verifications(sha=sha("a")) == [back]
    assert [r.result for r in store.query(sha=sha("a"))] == ["succeeded"]  # the rollout's record is untouched
    with pytest.raises(AuditError, match="only a succeeded rollout is verified"):
        store.record_verification(Verification(**{**verification.__dict__, "attempt_id": failed}))
    events = [e.payload for e in store.pending_events("chat", now=T0 + timedelta(days=365 * 30))]
    assert [(e["event"], e["result"]) for e in events][-1] == ("deploy.verified", "verification-failed")
