"""Verification rows are in the audit chain: a `verified` row inserted with plain SQL (the writer role's
INSERT) does not open a `require_verified` gate, the gate names it, `audit verify` and `history` name it;
on real SQLite and PostgreSQL. Verification rows that existed before the chain reached them are adopted
as found by the migration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from deployctl.app.verify import on_failure
from deployctl.cli import main
from deployctl.edges.audit import chained, dialect
from deployctl.edges.audit.chain import AuditKeys
from deployctl.edges.audit.schema import MIGRATIONS, VERIFICATION_CHAIN_VERSION
from deployctl.edges.audit.url import open_store
from deployctl.model.audit import AuditStore
from deployctl.model.config import load_config
from deployctl.model.state import DesiredState, Target
from deployctl.model.verification import Verification, VerifyResult
from deployctl.reconcile.policy import verification_facts
from deployctl.rules.gates import RunFact, check_gates
from tests.fixtures.auditdata import T0, make_attempt
from tests.integration.test_audit_append_only import (  # noqa: F401 - `roles` is a fixture
    AFTER_MIGRATE,
    OWNER_SETUP,
    Roles,
    _as,
    roles,
)
from tests.integration.test_audit_chain import KEY, pg, sqlite_exec, verify  # noqa: F401 - `pg` is a fixture

pytestmark = pytest.mark.integration

CONFIG = b"""version: 1
apps:
  web:
    image: reg.example.com/web
    verify:
      - name: a
        alert: Y
environments:
  staging:
    namespace: s
  production:
    namespace: p
    requires: [staging]
    require_verified: true
"""
FORGED_VERIFIED = (  # what the writer role can do: a `verified` row for staging's run of SHA 2, in plain SQL
    "INSERT INTO verifications (attempt_id, result, reason, checks, trigger, started_at, finished_at, recorded_at) "
    "VALUES ({attempt}, 'verified', 'all checks passed', '[]', 'manual', {now}, {now}, {now})"
)
INSERTED = ("verification 1 of attempt {attempt} (verified) was inserted with SQL: it carries no chain hash, and "
            "deployctl writes every row with one")  # fmt: skip


@contextmanager
def keyed_store(url: str) -> Iterator[AuditStore]:
    """The store at ``url`` as deployctl opens it with the key, closed after."""
    store = open_store(url, keys=AuditKeys.parse(KEY))
    try:
        yield store
    finally:
        store.close()


def staging_run(url: str) -> int:
    """A succeeded staging deploy of SHA 2, written by deployctl with the key: the gate's run is true."""
    with keyed_store(url) as store:
        (attempt,) = store.start_many([make_attempt(env="staging")])
        store.finish(attempt, result="succeeded")
        return attempt


def staging_verification(attempt: int, result: VerifyResult, reason: str, *, sha: str | None = None) -> Verification:
    """A five-minute verification in staging of web's ``attempt`` (of SHA 2 unless ``sha``)."""
    return Verification(attempt_id=attempt, env="staging", app="web", sha=sha or make_attempt().new_sha,
                        result=result, reason=reason, checks=(), started_at=T0,
                        finished_at=T0 + timedelta(minutes=5))


def gate(url: str) -> tuple[bool, str, tuple[str, ...]]:
    """Production's require_verified gate for SHA 2 against the store: (passed, message, rejected)."""
    config, problems = load_config(CONFIG)
    assert config is not None, problems
    sha = make_attempt().new_sha
    target = Target(env="production", app="web", sha=sha, image=f"reg.example.com/web:{sha}", namespace="p",
                    container="web", path="environments/production/web.deploy", line=1, depends_on=())  # fmt: skip
    with keyed_store(url) as store:
        verified, forged = verification_facts(store, [target], config)
    [result] = check_gates([target], config, [RunFact("staging", "web", sha, "succeeded")], source="audit",
                           verified=verified, rejected_verifications=forged)  # fmt: skip
    return result.passed, result.message(), result.rejected


def insert(url: str, statement: str) -> None:
    if url.startswith("sqlite://"):
        sqlite_exec(url, statement)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite store's URL."""
    return f"sqlite://{tmp_path}/audit.db"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store; on PostgreSQL set up as docs/audit.md says, addressed as the writer role (no key)."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/audit.db"
    roles_ = request.getfixturevalue("roles")
    _as(roles_, roles_.owner, OWNER_SETUP)
    open_store(roles_.url(roles_.owner)).close()
    _as(roles_, roles_.owner, AFTER_MIGRATE)
    return str(roles_.url(roles_.writer))


def test_a_verified_row_inserted_with_sql_does_not_open_the_gate_and_is_named(url: str) -> None:
    attempt = staging_run(url)
    now = "'2024-05-01T12:00:00.000000Z'" if url.startswith("sqlite://") else "now()"
    insert(url, FORGED_VERIFIED.format(attempt=attempt, now=now))
    passed, message, rejected = gate(url)
    assert not passed
    assert rejected == (INSERTED.format(attempt=attempt),)
    assert f"ran in staging but was never verified there; not counted: {INSERTED.format(attempt=attempt)}" in message

    result = verify(url)
    assert result.exit_code == 1
    assert result.output.endswith(f"Error: the audit chain is broken: {INSERTED.format(attempt=attempt)}\n")

    history = CliRunner().invoke(main, ["history", "--audit", url, "--env", "staging"],
                                 env={"DEPLOYCTL_AUDIT_KEY": KEY})  # fmt: skip
    assert history.exit_code == 0, history.output
    assert "succeeded, verified (UNTRUSTED)" in history.output
    assert f"attempt {attempt} (staging/web): {INSERTED.format(attempt=attempt)}" in history.output
    exported = CliRunner().invoke(main, ["history", "--audit", url, "--env", "staging", "-o", "json"],
                                  env={"DEPLOYCTL_AUDIT_KEY": KEY})  # fmt: skip
    [row] = json.loads(exported.output)
    assert (row["verification"], row["verification_chain_verified"]) == ("verified", False)


def test_a_verification_recorded_by_deployctl_opens_the_gate_and_verifies(url: str) -> None:
    attempt = staging_run(url)
    with keyed_store(url) as store:
        store.record_verification(staging_verification(attempt, VerifyResult.VERIFIED, "all checks passed"))
    assert gate(url)[0]
    result = verify(url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("chain holds: 3 row(s) (#1–#3)")


def test_an_edited_verification_is_named(sqlite_url: str) -> None:
    url = sqlite_url
    attempt = staging_run(url)
    with keyed_store(url) as store:
        store.record_verification(staging_verification(attempt, VerifyResult.FAILED, "errors: 0.3 >= 0.01"))
    sqlite_exec(url, "DROP TRIGGER verifications_append_only_update",
                "UPDATE verifications SET result = 'verified', reason = 'all checks passed'")
    passed, message, rejected = gate(url)
    assert not passed and "chain row #3 (verification 1 of attempt 1 (verified)) was edited" in message
    assert "chain row #3 (verification 1 of attempt 1 (verified)) was edited" in verify(url).output


def test_the_migration_chains_existing_verifications_as_found(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = sqlite_url
    with monkeypatch.context() as before:  # the deployctl of schema 8: a keyed chain, verifications outside it
        before.setattr(dialect, "MIGRATIONS", MIGRATIONS[: VERIFICATION_CHAIN_VERSION - 1])
        before.setattr(dialect, "SCHEMA_VERSION", VERIFICATION_CHAIN_VERSION - 1)
        before.setattr(chained, "CHAINED_TABLES", ("attempts", "outcomes"))
        attempt = staging_run(url)
        sqlite_exec(url, FORGED_VERIFIED.format(attempt=attempt, now="'2024-05-01T12:00:00.000000Z'"))
    staging_run(url)  # opening the store migrates it; then one more keyed attempt and outcome
    result = verify(url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("chain holds: 5 row(s) (#1–#5)")
    assert "unkeyed (written without a key): 1 row(s): chain row #3 (verification 1 of attempt 1 (verified))" in (
        result.output
    )
    assert gate(url)[0]  # taken as found, like the attempts migration 7 chained
    insert(url, FORGED_VERIFIED.format(attempt=attempt, now="'2024-05-01T13:00:00.000000Z'").replace(
        "(attempt_id", "(id, attempt_id").replace(f"VALUES ({attempt}", f"VALUES (2, {attempt}"))
    assert "verification 2 of attempt 1 (verified) was inserted with SQL" in verify(url).output  # after it: no


def test_a_forged_verified_row_never_chooses_the_roll_forward_target(sqlite_url: str) -> None:
    url = sqlite_url
    old, bad = "a" * 40, make_attempt().new_sha
    with keyed_store(url) as store:
        first, second = store.start_many([make_attempt(env="staging", new_sha=old),
                                          make_attempt(env="staging", started_at=T0 + timedelta(hours=1))])
        store.finish(first, result="succeeded")
        store.finish(second, result="succeeded")
    insert(url, FORGED_VERIFIED.format(attempt=first, now="'2024-05-01T12:00:00.000000Z'"))
    config, problems = load_config(CONFIG.replace(b"    namespace: s\n",
                                                  b"    namespace: s\n    on_verification_failure: roll-forward\n"))
    assert config is not None, problems
    failed = staging_verification(second, VerifyResult.FAILED, "errors: 0.3", sha=bad)
    with keyed_store(url) as store:
        done = on_failure(failed, DesiredState(config, (), (), "HEAD", None), store=store, clusters=None, repo=None)
    assert done == "no roll-forward: no earlier SHA of web was verified in staging"  # not the forged aaaa…
