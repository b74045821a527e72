"""A deploy repo written by an attacker: huge blobs, long histories, malformed trees, faked gate evidence.

Real repos built with pygit2 in tmp dirs; memory is measured in a child process (ru_maxrss).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.git.history import read_file_at
from deployctl.edges.git.repo import RepoError, read_desired_state
from deployctl.reconcile import policy
from tests.fixtures.auditdata import make_attempt
from tests.fixtures.gitrepo import PROJECT_ROOT, Blob, GitRepo, write_zero_blob

pytestmark = pytest.mark.integration

MakeRepo = Callable[..., GitRepo]
GIB = 1 << 30
A, B = "a" * 40, "b" * 40
CONFIG = b"""version: 1
apps:
  web:
    image: registry.example.com/shop/web
environments:
  staging:
    namespace: shop-staging
  production:
    namespace: shop
    requires: [staging]
"""
STAGING, PRODUCTION = "environments/staging/web.deploy", "environments/production/web.deploy"


def validate(repo: GitRepo, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", "--repo", str(repo.path), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def refusals(repo: GitRepo) -> dict[tuple[str, str], str]:
    """What git-mode reconcile refuses at HEAD (no audit store)."""
    desired = read_desired_state(repo.path)
    return policy.refusals(desired, repo=repo.path, now=datetime(2024, 6, 3, tzinfo=UTC))


# --- promotion evidence ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "staging",
    [f"{A}\n{B}\n".encode(), f"{B}\n".encode()],
    ids=["history-line-added-in-the-same-commit", "first-line-in-the-same-commit"],
)
def test_staging_evidence_written_in_the_commit_that_deploys_production_does_not_count(
    make_repo: MakeRepo, staging: bytes
) -> None:
    repo = make_repo()
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{A}\n", PRODUCTION: f"{A}\n"})
    repo.commit({STAGING: staging, PRODUCTION: f"{B}\n"}, message="Ship b to production")
    code, out = validate(repo)
    assert code == 1
    assert out.splitlines()[0] == (
        f"{PRODUCTION}:1: bbbbbbbbbbbb has not run successfully in staging (as the first line of "
        f"{STAGING} in an earlier commit); environment production requires staging first: deploy it "
        "to staging (deployctl promote web --from <env> --to staging) and promote from there"
    )
    assert list(refusals(repo)) == [("production", "web")]


def test_a_sha_first_in_staging_in_an_earlier_commit_passes_the_gate(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{A}\n", PRODUCTION: f"{A}\n"})
    repo.commit({STAGING: f"{B}\n{A}\n"}, message="Ship b to staging")
    repo.commit({PRODUCTION: f"{B}\n{A}\n"}, message="Promote b to production")
    assert validate(repo) == (0, f"ok: 2 targets in 2 environments at {repo.head[:12]}\n")
    assert refusals(repo) == {}


def test_with_an_audit_store_a_gate_needs_both_a_successful_run_and_the_git_evidence(
    make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo()
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{A}\n", PRODUCTION: f"{A}\n"})
    repo.commit({STAGING: f"{A}\n{B}\n", PRODUCTION: f"{B}\n"}, message="Ship b to production")
    store = open_store(f"sqlite://{tmp_path}/audit.db")
    try:  # b did run in staging (from another branch, say), but no staging commit here deployed it
        attempt = store.start(make_attempt(env="staging", new_sha=B, deploy_file=STAGING))
        store.finish(attempt, result="succeeded")
        desired = read_desired_state(repo.path)
        [gate] = policy.gate_results(repo.path, desired, store=store)
        assert (gate.passed, gate.source) == (False, "audit")
        repo.commit({STAGING: f"{B}\n"}, message="Ship b to staging")
        repo.commit({PRODUCTION: f"{B}\n# again\n"}, message="Ship b to production")
        [gate] = policy.gate_results(repo.path, read_desired_state(repo.path), store=store)
        assert gate.passed
    finally:
        store.close()


def test_the_history_walk_stops_after_the_configured_number_of_commits(
    make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo()
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{B}\n", PRODUCTION: f"{A}\n"})
    repo.commit({STAGING: f"{A}\n"})
    for n in range(4):
        repo.commit({"notes.txt": f"{n}\n"})
    repo.commit({PRODUCTION: f"{B}\n"})
    assert validate(repo)[0] == 0
    monkeypatch.setenv("DEPLOYCTL_MAX_HISTORY_COMMITS", "3")
    code, out = validate(repo)
    assert code == 1 and out.startswith(f"{PRODUCTION}:1: bbbbbbbbbbbb has not run successfully in staging")


# --- bounded reads ------------------------------------------------------------------------------

_MEASURE = """
import json, resource, sys
from deployctl.edges.git.repo import RepoError, read_desired_state
from deployctl.edges.git.history import read_file_at
from deployctl.reconcile.policy import with_gate_problems
state = with_gate_problems(sys.argv[1], read_desired_state(sys.argv[1]))
print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "problems": [str(p) for p in state.problems]}))
"""


def _measure(repo: GitRepo) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(repo.path)],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, check=True,
    )  # fmt: skip
    found = json.loads(done.stdout.splitlines()[-1])  # structlog, unconfigured, logs to stdout first
    return int(found["rss_mib"]), list(found["problems"])


def test_a_1_gib_deploy_file_is_an_error_naming_it_and_is_never_read(make_repo: MakeRepo) -> None:
    repo = make_repo(bare=True)  # bare: no checkout writes the gigabyte to disk
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{A}\n", PRODUCTION: f"{A}\n"})
    repo.commit({PRODUCTION: Blob(write_zero_blob(repo.repo, GIB))})
    rss_mib, problems = _measure(repo)
    assert problems == [
        f"{PRODUCTION}:1: is {GIB} bytes; deploy files are limited to 65536 bytes (keep the SHA and a short history)"
    ]
    assert rss_mib < 400, f"reading the repo took {rss_mib} MiB"  # the interpreter and imports; the blob is 1,024


def test_the_gate_history_walk_skips_a_1_gib_past_version(make_repo: MakeRepo) -> None:
    repo = make_repo(bare=True)
    repo.commit({"deployctl.yaml": CONFIG, STAGING: Blob(write_zero_blob(repo.repo, GIB)), PRODUCTION: f"{A}\n"})
    repo.commit({STAGING: f"{A}\n"})
    repo.commit({PRODUCTION: f"{B}\n"})
    rss_mib, problems = _measure(repo)
    assert [p.split(" has not")[0] for p in problems] == [f"{PRODUCTION}:1: bbbbbbbbbbbb"]
    assert rss_mib < 400, f"the gate walk took {rss_mib} MiB"  # the interpreter and imports; the blob is 1,024


def test_limits_come_from_the_environment_not_the_repo(make_repo: MakeRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo()
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{A}\n", PRODUCTION: f"{A}\n# a note\n"})
    repo.commit({STAGING: f"{A}\n"})
    monkeypatch.setenv("DEPLOYCTL_MAX_CONFIG_BYTES", "100")
    monkeypatch.setenv("DEPLOYCTL_MAX_DEPLOY_FILE_BYTES", "41")
    code, out = validate(repo, "--no-gates")
    assert code == 1
    assert out.splitlines()[:2] == [
        f"deployctl.yaml: is {len(CONFIG)} bytes; the limit is 100 bytes",
        f"{PRODUCTION}:1: is 50 bytes; deploy files are limited to 41 bytes (keep the SHA and a short history)",
    ]
    monkeypatch.setenv("DEPLOYCTL_MAX_DEPLOY_FILE_BYTES", "lots")
    assert validate(repo)[1] == "Error: $DEPLOYCTL_MAX_DEPLOY_FILE_BYTES='lots': give a whole number of at least 1\n"


# --- malformed trees ----------------------------------------------------------------------------


def _raw_tree(repo: pygit2.Repository, entries: list[tuple[bytes, bytes, pygit2.Oid]]) -> pygit2.Oid:
    raw = b"".join(b"%s %s\0" % (mode, name) + oid.raw for mode, name, oid in entries)
    return repo.odb.write(pygit2.GIT_OBJECT_TREE, raw)


def _commit_staging_tree(repo: GitRepo, staging_entries: list[tuple[bytes, bytes, pygit2.Oid]]) -> None:
    r = repo.repo
    blob = r.create_blob(f"{A}\n".encode())
    production = _raw_tree(r, [(b"100644", b"web.deploy", blob)])
    envs = _raw_tree(r, [(b"40000", b"production", production), (b"40000", b"staging", _raw_tree(r, staging_entries))])
    root = _raw_tree(r, [(b"100644", b"deployctl.yaml", r.create_blob(CONFIG)), (b"40000", b"environments", envs)])
    sig = pygit2.Signature("Mallory", "mallory@example.com")
    r.create_commit("refs/heads/main", sig, sig, "odd tree\n", root, [r.head.target])


def test_a_tree_entry_with_an_empty_name_is_a_validation_error_not_a_traceback(make_repo: MakeRepo) -> None:
    repo = make_repo(bare=True)
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{A}\n", PRODUCTION: f"{A}\n"})
    _commit_staging_tree(repo, [(b"100644", b"", repo.repo.create_blob(f"{B}\n".encode()))])
    code, out = validate(repo)
    assert code == 1
    assert out.splitlines()[0] == (
        "environments/staging: is a git tree that cannot be read (failed to parse tree: can't parse "
        "filename); an entry has an empty or malformed name, which a normal git client never writes: "
        "rewrite the commit"
    )


def test_duplicate_tree_entry_names_are_a_validation_error_and_give_no_target(make_repo: MakeRepo) -> None:
    repo = make_repo(bare=True)
    repo.commit({"deployctl.yaml": CONFIG, STAGING: f"{A}\n", PRODUCTION: f"{A}\n"})
    r = repo.repo
    _commit_staging_tree(
        repo, [(b"100644", b"web.deploy", r.create_blob(f"{A}\n".encode())),
               (b"100644", b"web.deploy", r.create_blob(f"{B}\n".encode()))]
    )  # fmt: skip
    code, out = validate(repo, "--no-gates")
    assert code == 1
    assert out.splitlines()[0] == (
        f"{STAGING}: appears 2 times in one git tree, so which one counts is undefined; a normal git "
        "client never writes this: rewrite the commit"
    )
    assert [t.key for t in read_desired_state(repo.path).targets] == [("production", "web")]


def test_reading_one_file_at_a_ref_is_bounded_too(make_repo: MakeRepo) -> None:
    repo = make_repo(bare=True)
    repo.commit({"deployctl.yaml": CONFIG, PRODUCTION: Blob(write_zero_blob(repo.repo, GIB))})
    with pytest.raises(RepoError, match=rf"^{PRODUCTION} at 'HEAD': is {GIB} bytes; the limit is 1048576 bytes$"):
        read_file_at(repo.path, PRODUCTION)
    assert read_file_at(repo.path, "deployctl.yaml") == CONFIG
