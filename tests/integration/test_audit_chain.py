"""The audit chain: `audit verify` names the first row that was inserted, edited, deleted or reordered
behind deployctl's back, on real SQLite and PostgreSQL (with its owner and writer roles); concurrent
writers in two processes leave one unbroken chain."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from deployctl.cli import main
from deployctl.edges.audit import chained
from deployctl.edges.audit.chain import AuditKeys, row_hash
from deployctl.edges.audit.schema import CHAIN_VERSION, MIGRATIONS
from deployctl.edges.audit.url import open_store
from deployctl.model.chain import Kind
from deployctl.reconcile.artifacts import DigestEvidence, audit_tested_digest
from tests.fixtures.auditdata import T0, make_attempt
from tests.integration.test_audit_append_only import (  # noqa: F401 - `roles` is a fixture
    AFTER_MIGRATE,
    OWNER_SETUP,
    Roles,
    _as,
    roles,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

KEY = "a-test-key-of-32-characters-long"
FORGED_OUTCOME = (
    "INSERT INTO outcomes (attempt_id, result, error, digest, finished_at, recorded_at) "
    "VALUES (2, 'succeeded', NULL, NULL, {now}, {now})"
)


def verify(url: str, *args: str, key: str | None = KEY) -> Result:
    env = {"DEPLOYCTL_AUDIT_KEY": key} if key else {"DEPLOYCTL_AUDIT_KEY": ""}
    return CliRunner().invoke(main, ["audit", "verify", "--audit", url, *args], env=env)


def record_three(url: str, *, key: str | None = KEY) -> None:
    """Attempt 1 failed, attempt 2 still running, attempt 3 succeeded: 5 chained rows."""
    store = open_store(url, keys=AuditKeys.parse(key) if key else None)
    try:
        first, _, third = store.start_many([make_attempt(app=a) for a in ("web", "api", "worker")])
        store.finish(first, result="failed", error="rollout timed out")
        store.finish(third, result="succeeded")
    finally:
        store.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite://{tmp_path}/audit.db"
    record_three(url)
    return url


@pytest.fixture
def pg(roles: Roles) -> Iterator[Roles]:  # noqa: F811 - the imported fixture
    """A PostgreSQL store set up as docs/audit.md says (owner migrates, writer appends) with 3 records."""
    _as(roles, roles.owner, OWNER_SETUP)
    open_store(roles.url(roles.owner)).close()
    _as(roles, roles.owner, AFTER_MIGRATE)
    record_three(roles.url(roles.writer))
    yield roles


def sqlite_exec(url: str, *statements: str) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite://"))
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def test_an_intact_keyed_chain_verifies(sqlite_url: str) -> None:
    result = verify(sqlite_url)
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()[:2]
    assert first.startswith("chain holds: 5 row(s) (#1–#5), head ")
    assert second == "MACs checked with DEPLOYCTL_AUDIT_KEY: 5 keyed row(s)"


def test_a_succeeded_row_inserted_with_sql_fails_verify_naming_it_sqlite(sqlite_url: str) -> None:
    sqlite_exec(sqlite_url, FORGED_OUTCOME.format(now="'2024-05-01T12:00:00.000000Z'"))
    result = verify(sqlite_url)
    assert result.exit_code == 1
    assert result.output.endswith(
        "Error: the audit chain is broken: the outcome of attempt 2 (succeeded) was inserted with SQL: it "
        "carries no chain hash, and deployctl writes every row with one\n"
    )


def test_a_succeeded_row_inserted_by_the_postgres_writer_role_fails_verify_naming_it(pg: Roles) -> None:
    with psycopg.connect(pg.url(pg.writer), autocommit=True) as conn:
        conn.execute(FORGED_OUTCOME.format(now="now()"))  # type: ignore[arg-type]
    result = verify(pg.url(pg.writer))
    assert result.exit_code == 1
    assert "Error: the audit chain is broken: the outcome of attempt 2 (succeeded) was inserted with SQL" in (
        result.output
    )


def test_a_forged_row_with_a_correct_hash_but_no_mac_fails_as_unkeyed(sqlite_url: str) -> None:
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite://"))
    seq, head = conn.execute("SELECT chain_seq, chain_hash FROM outcomes ORDER BY chain_seq DESC LIMIT 1").fetchone()
    values = (2, "succeeded", None, None, "2024-05-01T12:00:00.000000Z", "2024-05-01T12:00:00.000000Z")
    conn.execute(
        "INSERT INTO outcomes (attempt_id, result, error, digest, finished_at, recorded_at, chain_seq, chain_prev, "
        "chain_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*values, seq + 1, head, row_hash(Kind.OUTCOME, head, values)),
    )
    conn.commit()
    conn.close()
    result = verify(sqlite_url)
    assert result.exit_code == 1
    assert (
        "Error: the audit chain is broken: chain row #6 (the outcome of attempt 2 (succeeded)) carries no MAC "
        "although the chain is keyed from #1 on" in result.output
    )
    assert verify(sqlite_url, key=None).exit_code == 1  # the rule holds without the key too


def test_a_forged_row_with_a_borrowed_mac_fails_as_a_mac_mismatch(sqlite_url: str) -> None:
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite://"))
    seq, head, mac = conn.execute(
        "SELECT chain_seq, chain_hash, chain_mac FROM outcomes ORDER BY chain_seq DESC LIMIT 1"
    ).fetchone()
    values = (2, "succeeded", None, None, "2024-05-01T12:00:00.000000Z", "2024-05-01T12:00:00.000000Z")
    conn.execute(
        "INSERT INTO outcomes (attempt_id, result, error, digest, finished_at, recorded_at, chain_seq, chain_prev, "
        "chain_hash, chain_mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*values, seq + 1, head, row_hash(Kind.OUTCOME, head, values), mac),
    )
    conn.commit()
    conn.close()
    result = verify(sqlite_url)
    assert result.exit_code == 1
    assert "chain row #6 (the outcome of attempt 2 (succeeded)) has a MAC that does not match" in result.output
    assert verify(sqlite_url, key="another-key-of-32-characters-long").output.count("which DEPLOYCTL_AUDIT_KEY "
                                                                                     "does not hold") == 1


def test_a_row_edited_by_the_postgres_owner_role_fails_verify_naming_it(pg: Roles) -> None:
    _as(pg, pg.owner, (
        "ALTER TABLE outcomes DISABLE TRIGGER outcomes_append_only",
        "UPDATE outcomes SET result = 'succeeded', error = NULL WHERE attempt_id = 1",
        "ALTER TABLE outcomes ENABLE TRIGGER outcomes_append_only",
    ))  # fmt: skip
    result = verify(pg.url(pg.writer))
    assert result.exit_code == 1
    assert result.output.endswith(
        "Error: the audit chain is broken: chain row #4 (the outcome of attempt 1 (succeeded)) was edited after "
        "it was written (by a role that may update the table, e.g. the owner) or inserted with a made-up hash: its "
        "content does not match its hash\n"
    )


def test_a_row_edited_in_the_sqlite_file_fails_verify_naming_it(sqlite_url: str) -> None:
    sqlite_exec(sqlite_url, "DROP TRIGGER attempts_append_only_update",
                "UPDATE attempts SET new_sha = 'ffffffffffffffffffffffffffffffffffffffff' WHERE id = 3")  # fmt: skip
    result = verify(sqlite_url)
    assert result.exit_code == 1
    assert "Error: the audit chain is broken: chain row #3 (attempt 3) was edited after it was written" in (
        result.output
    )


def test_a_deleted_row_is_named_by_the_row_after_it(sqlite_url: str) -> None:
    sqlite_exec(sqlite_url, "DROP TRIGGER attempts_append_only_delete", "DELETE FROM attempts WHERE id = 2")
    result = verify(sqlite_url)
    assert result.exit_code == 1
    assert ("Error: the audit chain is broken: chain row #3 (attempt 3) follows a row (hash "
            in result.output and "that is no longer in the store: the row(s) before it were deleted" in result.output)


def test_reordered_rows_are_named(pg: Roles) -> None:
    _as(pg, pg.owner, (
        "ALTER TABLE attempts DISABLE TRIGGER attempts_append_only",
        "UPDATE attempts SET chain_seq = 100 WHERE id = 2",
        "UPDATE attempts SET chain_seq = 2 WHERE id = 3",
        "UPDATE attempts SET chain_seq = 3 WHERE id = 2",
        "ALTER TABLE attempts ENABLE TRIGGER attempts_append_only",
    ))  # fmt: skip
    result = verify(pg.url(pg.writer))
    assert result.exit_code == 1
    assert ("Error: the audit chain is broken: chain row #2 (attempt 3) follows #3 (attempt 2) in the chain but "
            "is stored before it: rows were reordered") in result.output


def test_the_gate_check_names_forged_rows_and_passes_true_ones(sqlite_url: str) -> None:
    sqlite_exec(sqlite_url, FORGED_OUTCOME.format(now="'2024-05-01T12:00:00.000000Z'"))
    store = open_store(sqlite_url, keys=AuditKeys.parse(KEY))
    try:
        assert store.unverified([1, 2, 3]) == {
            2: "the outcome of attempt 2 (succeeded) was inserted with SQL: it carries no chain hash, and "
            "deployctl writes every row with one"
        }
    finally:
        store.close()


TESTED, SWAPPED = "sha256:" + "1" * 64, "sha256:" + "2" * 64
FORGED_STAGING_RUN = (  # a newer staging success of the same SHA, claiming other bytes ran, in plain SQL
    "INSERT INTO attempts (id, env, app, namespace, workloads, previous_sha, new_sha, image, digest, deploy_file, "
    "reviewers, trigger, actor_user, actor_host, started_at) SELECT (SELECT max(id) + 1 FROM attempts), env, "
    "'{app}', namespace, workloads, "
    f"previous_sha, new_sha, image, '{SWAPPED}', deploy_file, reviewers, trigger, 'mallory', actor_host, "
    "'2024-05-01T13:00:00.000000Z' FROM attempts WHERE id = 4",
    "INSERT INTO outcomes (attempt_id, result, error, digest, finished_at, recorded_at) SELECT max(id), "
    f"'succeeded', NULL, '{SWAPPED}', '2024-05-01T13:00:00.000000Z', '2024-05-01T13:00:00.000000Z' FROM attempts",
)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_forged_staging_success_never_supplies_the_tested_digest_and_is_named(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite://{tmp_path}/audit.db"
        record_three(url)
    else:
        pg = request.getfixturevalue("pg")
        url = pg.url(pg.writer)  # the writer role: INSERT and SELECT, no key

    def forge(app: str) -> None:
        if backend == "sqlite":
            sqlite_exec(url, *(q.format(app=app) for q in FORGED_STAGING_RUN))
            return
        with psycopg.connect(url, autocommit=True) as conn:
            for q in FORGED_STAGING_RUN:
                conn.execute(q.format(app=app))  # type: ignore[arg-type]

    store = open_store(url, keys=AuditKeys.parse(KEY))
    try:
        (staging,) = store.start_many([make_attempt(env="staging", digest=TESTED, started_at=T0 + timedelta(minutes=30))])
        store.finish(staging, result="succeeded", digest=TESTED)
        tested = audit_tested_digest(store)
        sha = make_attempt().new_sha
        assert tested("staging", "web", sha) == DigestEvidence(TESTED)
        forge("web")
        inserted = "was inserted with SQL: it carries no chain hash, and deployctl writes every row with one"
        assert tested("staging", "web", sha) == DigestEvidence(TESTED, (
            f"attempt 5's claim that sha256:222222222222… ran in staging (attempt 5 {inserted})",
        ))  # fmt: skip
        forge("api")  # the only run of api in staging is forged: nothing says what was tested
        assert tested("staging", "api", sha) == DigestEvidence(None, (
            f"attempt 6's claim that sha256:222222222222… ran in staging (attempt 6 {inserted})",
        ))  # fmt: skip
    finally:
        store.close()


def test_a_forged_decision_does_not_stand_for_the_controllers_own(tmp_path: Path) -> None:
    """One record per decision reads the latest record; a copy inserted with SQL must not silence the next one."""
    from deployctl.controller.decisions import OncePerDecision
    from deployctl.model.state import Target
    from deployctl.reconcile.recorder import AuditRecorder
    from deployctl.rules.plan import Action, Change

    url = f"sqlite://{tmp_path}/audit.db"
    new = "b" * 40
    target = Target("production", "web", new, f"r/web:{new}", "shop", "web", "environments/production/web.deploy",
                    1, ())  # fmt: skip
    item = (Change("production", "web", Action.UPDATE, "shop", target, old_sha="a" * 40), target.image, "refused",
            "production is frozen until Monday")  # fmt: skip
    store = open_store(url, keys=AuditKeys.parse(KEY))
    try:
        once = OncePerDecision(AuditRecorder(store, repo_path=None, trigger="watch"), store)
        assert once.decisions([item], deploy_commit=None) == [1]
        assert once.decisions([item], deploy_commit=None) == [None]  # on record: not written again
        columns = ("env, app, namespace, workloads, previous_sha, new_sha, image, deploy_file, reviewers, trigger, "
                   "actor_user, actor_host")  # fmt: skip
        sqlite_exec(url,
                    f"INSERT INTO attempts ({columns}, started_at) SELECT {columns}, '2099-01-01T00:00:00.000000Z' "
                    "FROM attempts WHERE id = 1",
                    "INSERT INTO outcomes (attempt_id, result, error, finished_at, recorded_at) SELECT 2, result, "
                    "error, finished_at, recorded_at FROM outcomes WHERE attempt_id = 1")  # fmt: skip
        assert once.decisions([item], deploy_commit=None) == [3]
    finally:
        store.close()


def test_a_store_without_a_key_keeps_working_and_verify_names_the_unkeyed_rows(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/audit.db"
    record_three(url, key=None)
    result = verify(url, "-o", "json", key=None)
    assert result.exit_code == 0, result.output
    assert '"unkeyed_rows": 5' in result.output and '"macs_checked": false' in result.output
    text = verify(url).output
    assert "unkeyed (written without a key): 5 row(s): chain row #1 (attempt 1) – chain row #5 (the outcome " in text
    # a key set later: new rows are keyed, the old ones stay reported as unkeyed, the chain holds
    record_three(url)
    assert "MACs checked with DEPLOYCTL_AUDIT_KEY: 5 keyed row(s)" in verify(url).output


def test_verify_since_starts_at_a_known_good_attempt(sqlite_url: str) -> None:
    sqlite_exec(sqlite_url, "DROP TRIGGER attempts_append_only_update",
                "UPDATE attempts SET env = 'staging' WHERE id = 1")  # fmt: skip
    assert verify(sqlite_url).exit_code == 1
    result = verify(sqlite_url, "--since", "2")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("chain holds: 4 row(s) (#2–#5)")
    assert verify(sqlite_url, "--since", "99").output.endswith("Error: --since 99: there is no attempt 99 in "
                                                               f"{sqlite_url}\n")


def test_verify_pages_through_the_chain(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    record_three(sqlite_url)
    record_three(sqlite_url)
    monkeypatch.setattr(chained, "_PAGE", 2)
    result = verify(sqlite_url, "-o", "json")
    assert result.exit_code == 0, result.output
    assert '"rows": 15' in result.output


def test_the_migration_chains_existing_rows_as_found_and_marks_the_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    conn = sqlite3.connect(path)  # a store as deployctl left it before the chain
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                 "applied_at TEXT NOT NULL)")  # fmt: skip
    for migration in MIGRATIONS[: CHAIN_VERSION - 1]:
        for statement in migration.sqlite:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, 'x')", (migration.version, migration.description))
    conn.execute("INSERT INTO attempts (env, app, namespace, workloads, new_sha, image, deploy_file, reviewers, "
                 "trigger, actor_user, actor_host, started_at) VALUES ('staging', 'web', 'shop', '[]', "
                 "'2222222222222222222222222222222222222222', 'img', 'f', '[]', 'ci', 'u', 'h', "
                 "'2024-05-01T12:00:00.000000Z')")  # fmt: skip
    conn.execute("INSERT INTO outcomes VALUES (1, 'succeeded', NULL, NULL, '2024-05-01T12:01:00.000000Z', "
                 "'2024-05-01T12:01:00.000000Z')")  # fmt: skip
    conn.commit()
    conn.close()
    url = f"sqlite://{path}"
    record_three(url)
    result = verify(url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("chain holds: 7 row(s) (#1–#7)")
    assert "rows #1–#2 were chained as found when the store was migrated to the chain, not when written" in result.output
    assert "unkeyed (written without a key): 2 row(s): chain row #1 (attempt 1) – chain row #2" in result.output
    sqlite_exec(url, "DROP TRIGGER outcomes_append_only_update", "UPDATE outcomes SET result = 'failed'")
    assert "chain row #2 (the outcome of attempt 1 (failed)) was edited" in verify(url).output


def test_the_postgres_owner_migration_chains_existing_rows_for_the_writer(roles: Roles) -> None:  # noqa: F811
    _as(roles, roles.owner, OWNER_SETUP)
    with psycopg.connect(roles.url(roles.owner), autocommit=True) as conn:  # deployctl's schema before the chain, with a record
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL)")  # fmt: skip
        for migration in MIGRATIONS[: CHAIN_VERSION - 1]:
            for statement in migration.postgres:
                conn.execute(statement)  # type: ignore[arg-type]
            conn.execute("INSERT INTO schema_version VALUES (%s, %s, now())", (migration.version, migration.description))
        conn.execute("INSERT INTO attempts (env, app, namespace, workloads, new_sha, image, deploy_file, reviewers, "
                     "trigger, actor_user, actor_host, started_at) VALUES ('staging', 'web', 'shop', '[]', "
                     "'2222222222222222222222222222222222222222', 'img', 'f', '[]', 'ci', 'u', 'h', now())")  # fmt: skip
        conn.execute("INSERT INTO outcomes VALUES (1, 'succeeded', NULL, NULL, now(), now())")
    assert CliRunner().invoke(main, ["audit", "migrate", "--audit", roles.url(roles.owner)]).exit_code == 0
    _as(roles, roles.owner, AFTER_MIGRATE)
    record_three(roles.url(roles.writer))
    result = verify(roles.url(roles.writer))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("chain holds: 7 row(s) (#1–#7)")
    assert "rows #1–#2 were chained as found when the store was migrated to the chain" in result.output
    with psycopg.connect(roles.url(roles.owner), autocommit=True) as conn:  # the triggers are back on
        for table in ("attempts", "outcomes"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(f"UPDATE {table} SET chain_mac = NULL")  # type: ignore[arg-type]


def append(url: str, worker: int, count: int) -> list[int]:
    store = open_store(url, keys=AuditKeys.parse(KEY))
    ids = []
    try:
        for i in range(count):
            at = T0 + timedelta(seconds=i)
            attempt_id = store.start(replace(make_attempt(app=f"app{worker}"), started_at=at))
            store.finish(attempt_id, result="succeeded", finished_at=at)
            ids.append(attempt_id)
    finally:
        store.close()
    return ids


WRITER = """
import sys
from deployctl.log import configure_logging
from tests.integration.test_audit_chain import append
configure_logging("error")
print(",".join(str(i) for i in append(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_processes_writing_at_once_leave_one_unbroken_chain(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite://{tmp_path}/audit.db" if backend == "sqlite" else request.getfixturevalue("postgres_db")
    open_store(url).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), "300"], cwd=ROOT, stdout=subprocess.PIPE,
                         text=True)  # fmt: skip
        for w in range(2)
    ]
    given = []
    for writer in writers:
        out, _ = writer.communicate(timeout=600)
        assert writer.returncode == 0
        given += [int(i) for i in out.splitlines()[-1].split(",")]
    assert sorted(given) == list(range(1, 601))
    result = verify(url, "-o", "json")
    assert result.exit_code == 0, result.output
    assert '"rows": 1200' in result.output and '"keyed_rows": 1200' in result.output
