"""`deployctl init` in an empty directory, in an existing repo, and refusing to overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from deployctl.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_init_in_an_empty_dir_makes_a_repo_that_validates_and_prints_the_next_three_commands(tmp_path: Path) -> None:
    target = tmp_path / "deploy"
    code, out = run("init", str(target), "--env", "staging,production", "--app", "web", "--app", "api",
                    "--approver", "@shop/release", "--ci", "github")
    assert code == 0, out
    nxt = out.split("Next:\n", 1)[1].splitlines()
    assert nxt == [f"  deployctl validate --repo {target} --worktree",
                   f"  git -C {target} add -A && git -C {target} commit -m 'Deploy with deployctl'",
                   f"  deployctl plan --repo {target} --env staging"]
    text = (target / "deployctl.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=.deployctl/deployctl.schema.json\n")
    assert "    # pin: digest" in text and "requires: [staging]" in text
    assert (target / ".deployctl" / "deployctl.schema.json").is_file()
    assert (target / "environments" / "production" / "README.md").is_file()
    assert (target / ".github" / "workflows" / "deployctl.yml").read_text() == \
        (ROOT / "docs" / "ci" / "github-actions.yml").read_text()
    assert pygit2.Repository(str(target)).head_is_unborn
    assert run("validate", "--repo", str(target), "--worktree")[0] == 0
    assert run("codeowners", "--repo", str(target), "--check")[0] == 0


def test_init_in_an_existing_repo_keeps_its_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    pygit2.init_repository(str(tmp_path))
    (tmp_path / "README.md").write_text("our deploys\n")
    (tmp_path / "deployctl.yaml").write_text("version: 1\napps: {}\nenvironments: {}\n")
    code, out = run("init", str(tmp_path), "--ci", "gitlab")
    assert code == 2 and "init would overwrite deployctl.yaml; nothing was written" in out
    assert not (tmp_path / ".gitlab-ci.yml").exists() and not (tmp_path / "environments").exists()
    code, out = run("init", str(tmp_path), "--ci", "gitlab", "--force", "-o", "json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["git_init"] is False and "deployctl.yaml" in doc["written"] and ".gitlab-ci.yml" in doc["written"]
    assert (tmp_path / "README.md").read_text() == "our deploys\n"
    again = json.loads(run("init", str(tmp_path), "--ci", "gitlab", "-o", "json")[1])  # same files: no clash
    assert again["written"] == [] and len(again["next"]) == 3


def test_init_refuses_names_that_are_not_dns_labels(tmp_path: Path) -> None:
    code, out = run("init", str(tmp_path), "--env", "Prod")
    assert code == 2 and "environment name 'Prod' has uppercase letters" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml", "gitea-actions.yml"])
def test_the_ci_templates_init_writes_are_the_documented_ones(name: str) -> None:
    assert (ROOT / "deployctl" / "scaffold" / name).read_text() == (ROOT / "docs" / "ci" / name).read_text()


def test_init_ci_gitea_writes_the_gitea_workflow_and_codeowners_where_gitea_reads_them(tmp_path: Path) -> None:
    code, out = run("init", str(tmp_path), "--ci", "gitea", "--approver", "@shop/release")
    assert code == 0, out
    workflow = (tmp_path / ".gitea" / "workflows" / "deployctl.yml").read_text()
    assert workflow == (ROOT / "docs" / "ci" / "gitea-actions.yml").read_text()
    assert "DEPLOYCTL_FORGE_TYPE: gitea" in workflow and '--comment "$PR_NUMBER"' in workflow
    assert "@shop/release" in (tmp_path / ".gitea" / "CODEOWNERS").read_text()
    assert run("codeowners", "--repo", str(tmp_path), "--check", "--file", ".gitea/CODEOWNERS")[0] == 0
