"""`deployctl validate` on real git repos: what a user sees and the exit code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from tests.fixtures.gitrepo import PROJECT_ROOT, GitRepo, Symlink
from tests.unit.test_hostile_corpus import CASES, Case

pytestmark = pytest.mark.integration

MakeRepo = Callable[..., GitRepo]
SHA = "60375125abec57111e2eaeac7081f8f45bdfe28b"


def validate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_clean_example_repo_exits_0_with_a_one_line_summary(deploy_repo: GitRepo) -> None:
    code, out = validate("--repo", str(deploy_repo.path))
    assert (code, out) == (0, f"ok: 6 targets in 2 environments at {deploy_repo.head[:12]}\n")


def test_the_project_itself_is_a_valid_deploy_repo() -> None:
    code, out = validate("--repo", str(PROJECT_ROOT))
    assert code == 0, out
    assert out.startswith("ok: 6 targets in 2 environments at ")


def test_every_problem_is_reported_at_once_with_path_and_line(deploy_repo: GitRepo) -> None:
    deploy_repo.commit(
        {
            "environments/staging/web.deploy": b"abc123\n",
            "environments/production/api.deploy": SHA.upper().encode(),
            "environments/qa/web.deploy": SHA.encode(),
        }
    )
    code, out = validate("--repo", str(deploy_repo.path))
    assert code == 1
    assert out.splitlines() == [
        f"environments/production/api.deploy:1: '{SHA.upper()}' has uppercase letters; "
        "write the SHA in lowercase",
        "environments/qa: environment 'qa' has no entry under environments: in deployctl.yaml; "
        "add one (with its namespace) or remove the folder",
        "environments/staging/web.deploy:1: 'abc123' is a short SHA (6 characters); "
        "write the full 40-character commit SHA (git rev-parse <commit>)",
        f"3 errors at {deploy_repo.head[:12]} (HEAD); fix them and run deployctl validate again",
    ]


def test_warnings_are_shown_but_do_not_fail(deploy_repo: GitRepo) -> None:
    deploy_repo.commit({"environments/staging/web.deploy": f"{SHA}\r\n* note\r\n".encode()})
    code, out = validate("--repo", str(deploy_repo.path))
    assert code == 0
    assert out.splitlines() == [
        "environments/staging/web.deploy:1: has Windows (CRLF) line endings; "
        "they work, but LF keeps diffs clean  (warning)",
        f"ok: 6 targets in 2 environments at {deploy_repo.head[:12]} (1 warning)",
    ]


def test_ref_selects_an_older_commit(deploy_repo: GitRepo) -> None:
    good = deploy_repo.head
    deploy_repo.commit({"environments/staging/web.deploy": b"oops\n"})
    assert validate("--repo", str(deploy_repo.path))[0] == 1
    assert validate("--repo", str(deploy_repo.path), "--ref", good)[0] == 0
    assert validate("--repo", str(deploy_repo.path), "--ref", "HEAD~1")[0] == 0


def test_worktree_checks_uncommitted_edits(deploy_repo: GitRepo) -> None:
    (deploy_repo.path / "environments/production/web.deploy").write_text("dc4f7d8\n")
    assert validate("--repo", str(deploy_repo.path))[0] == 0
    code, out = validate("--repo", str(deploy_repo.path), "--worktree")
    assert code == 1
    assert out.splitlines()[0].startswith("environments/production/web.deploy:1: 'dc4f7d8' is a short SHA")
    assert (
        out.splitlines()[-1]
        == "1 error at the work tree (worktree); fix them and run deployctl validate again"
    )


def test_json_output_has_targets_and_problems(deploy_repo: GitRepo) -> None:
    deploy_repo.commit({"environments/staging/api.deploy": b"nope\n"})
    code, out = validate("--repo", str(deploy_repo.path), "-o", "json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["commit"] == deploy_repo.head and doc["ref"] == "HEAD"
    assert len(doc["targets"]) == 5
    assert doc["targets"][0] == {
        "app": "api",
        "container": "api",
        "context": None,
        "depends_on": [],
        "env": "production",
        "image": "registry.example.com/shop/api:49ca20aa3c50080531f3539a01f6ddc369a23278",
        "line": 1,
        "namespace": "shop",
        "path": "environments/production/api.deploy",
        "sha": "49ca20aa3c50080531f3539a01f6ddc369a23278",
    }
    assert doc["problems"] == [
        {
            "app": "api",
            "env": "staging",
            "line": 1,
            "message": "'nope' is not a commit SHA; "
            "write the full 40-character commit SHA (git rev-parse <commit>)",
            "path": "environments/staging/api.deploy",
            "severity": "error",
        }
    ]


def test_ref_and_worktree_together_is_a_usage_error(deploy_repo: GitRepo) -> None:
    code, out = validate("--repo", str(deploy_repo.path), "--ref", "HEAD", "--worktree")
    assert code == 2 and "give either --ref or --worktree, not both" in out


def test_not_a_git_repo_exits_2_with_one_error_line(tmp_path: Path) -> None:
    code, out = validate("--repo", str(tmp_path))
    assert code == 2
    assert out.strip().splitlines() == [
        f"Error: {tmp_path}: not a git repository (Repository not found at {tmp_path}); "
        "pass --repo with a git repo"
    ]


def test_unknown_ref_exits_2(deploy_repo: GitRepo) -> None:
    code, out = validate("--repo", str(deploy_repo.path), "--ref", "release-9")
    assert code == 2 and out.startswith("Error: ") and "ref 'release-9' does not resolve" in out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_repo_exits_1_naming_file_and_line(case: Case, make_repo: MakeRepo) -> None:
    repo = make_repo()
    files = {**case.extra, **case.files}
    if case.config is not None:
        files["deployctl.yaml"] = case.config if isinstance(case.config, Symlink) else case.config
    repo.commit(files)
    code, out = validate("--repo", str(repo.path))
    assert code == 1, out
    assert any(line.startswith(case.where + ": ") and case.says in line for line in out.splitlines()), out
