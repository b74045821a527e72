"""diff, promote, rollback, codeowners and validate's gates on real git repos, as a user sees them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from deployctl.cli import main
from tests.fixtures.gitrepo import GitRepo

pytestmark = pytest.mark.integration

MakeRepo = Callable[..., GitRepo]
API1, API2 = "1" * 40, "2" * 40
CONFIG = """version: 1
apps:
  web:
    image: registry.example.com/shop/web
    source: ../web
  api:
    image: registry.example.com/shop/api
environments:
  staging:
    namespace: shop-staging
  production:
    namespace: shop
    requires: [staging]
    approvers: ["@shop/release-managers"]
"""
NOTE = re.compile(r"\* (promoted from staging|rollback from [0-9a-f]{12}) by Ana Admin <ana@example.com> "
                  r"on \d{4}-\d\d-\d\dT\d\d:\d\dZ")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


class Shop:
    """A deploy repo (staging ahead of production) and the web app's own source repo."""

    def __init__(self, make_repo: MakeRepo) -> None:
        self.web = make_repo("web")
        self.w1 = self.web.commit({"app.py": "1"}, message="Web: first")
        self.w2 = self.web.commit({"app.py": "2"}, message="Checkout: delivery dates")
        self.w3 = self.web.commit({"app.py": "3"}, message="Search: fix paging", author=("Bo", "bo@x.io"))
        self.deploy = make_repo("deploy")
        self.deploy.repo.config["user.name"] = "Ana Admin"
        self.deploy.repo.config["user.email"] = "ana@example.com"
        self.deploy.commit({  # staging ran what production runs, before production got it
            "deployctl.yaml": CONFIG,
            "environments/staging/web.deploy": f"{self.w1}\n",
            "environments/staging/api.deploy": f"{API1}\n",
        }, message="Staging first")
        self.base = self.deploy.commit({
            "deployctl.yaml": CONFIG,
            "environments/staging/web.deploy": f"{self.w3}\n* Search paging\n{self.w1}\n",
            "environments/production/web.deploy": f"{self.w1}\n* First web\n",
            "environments/staging/api.deploy": f"{API2}\n",
            "environments/production/api.deploy": f"{API1}\n",
        }, message="Deploy tree")
        self.path = str(self.deploy.path)

    def file(self, env: str, app: str) -> str:
        return (self.deploy.path / "environments" / env / f"{app}.deploy").read_text()


@pytest.fixture
def shop(make_repo: MakeRepo) -> Shop:
    return Shop(make_repo)


# -- promote ------------------------------------------------------------------------------------


def test_promote_writes_the_sha_on_top_with_a_note_and_keeps_history(shop: Shop) -> None:
    code, out = run("promote", "web", "--from", "staging", "--to", "production", "--repo", shop.path)
    assert (code, out) == (0, f"promoted web to production: {shop.w1[:12]} -> {shop.w3[:12]} "
                              "(environments/production/web.deploy)\n")
    lines = shop.file("production", "web").splitlines()
    assert lines[0] == shop.w3 and NOTE.fullmatch(lines[1])
    assert lines[2:] == [shop.w1, "* First web"]
    assert shop.deploy.head == shop.base  # nothing committed


def test_promote_commit_commits_only_the_deploy_file_on_the_current_branch(shop: Shop) -> None:
    (shop.deploy.path / "notes.txt").write_text("unrelated work in progress\n")
    code, out = run("promote", "web", "--from", "staging", "--to", "production", "--commit", "-m", "INC-7",
                    "--repo", shop.path)
    assert code == 0
    commit = shop.deploy.repo.head.peel(pygit2.Commit)
    assert out.splitlines()[-1] == f"committed {str(commit.id)[:12]}"
    assert shop.deploy.repo.head.shorthand == "main"
    assert commit.message == (f"Promote web from staging to production ({shop.w3[:12]})\n\n"
                              f"- web: {shop.w1[:12]} -> {shop.w3[:12]}\n\nINC-7\n")
    assert commit.author.email == "ana@example.com"
    assert "notes.txt" not in commit.tree
    assert [str(p) for p in commit.parent_ids] == [shop.base]
    assert shop.deploy.repo.status().get("environments/production/web.deploy") is None  # index matches


def test_promote_all_promotes_every_app_that_differs(shop: Shop) -> None:
    code, out = run("promote", "--all", "--from", "staging", "--to", "production", "--repo", shop.path)
    assert code == 0
    assert out.splitlines() == [
        f"promoted api to production: {API1[:12]} -> {API2[:12]} (environments/production/api.deploy)",
        f"promoted web to production: {shop.w1[:12]} -> {shop.w3[:12]} (environments/production/web.deploy)",
    ]
    code, out = run("promote", "--all", "--from", "staging", "--to", "production", "--repo", shop.path)
    assert (code, out) == (0, "nothing to promote: every app in production already runs what staging runs\n")


def test_promote_errors_name_the_file_and_exit_2(shop: Shop) -> None:
    run("promote", "web", "--from", "staging", "--to", "production", "--repo", shop.path)
    code, out = run("promote", "web", "--from", "staging", "--to", "production", "--repo", shop.path)
    assert (code, out) == (2, f"Error: environments/production/web.deploy:1: web already runs "
                              f"{shop.w3[:12]} in production\n")
    code, out = run("promote", "web", "--from", "staging", "--to", "qa", "--repo", shop.path)
    assert (code, out) == (2, "Error: deployctl.yaml: unknown environment 'qa' (known: production, staging)\n")
    code, out = run("promote", "--from", "staging", "--to", "production", "--repo", shop.path)
    assert code == 2 and out.endswith("Error: give an APP or --all (not both)\n")


# -- rollback -----------------------------------------------------------------------------------


def test_rollback_prepends_the_previous_sha_and_keeps_history(shop: Shop) -> None:
    code, out = run("rollback", "web", "--env", "staging", "--commit", "--repo", shop.path)
    assert code == 0
    assert out.splitlines()[0] == (f"rolled back web in staging: {shop.w3[:12]} -> {shop.w1[:12]} "
                                   "(environments/staging/web.deploy)")
    lines = shop.file("staging", "web").splitlines()
    assert lines[0] == shop.w1 and NOTE.fullmatch(lines[1]) and lines[1].startswith(
        f"* rollback from {shop.w3[:12]} ")
    assert lines[2:] == [shop.w3, "* Search paging", shop.w1]
    commit = shop.deploy.repo.head.peel(pygit2.Commit)
    assert commit.message.splitlines()[0] == f"Roll back web in staging to {shop.w1[:12]} (from {shop.w3[:12]})"
    assert [str(p) for p in commit.parent_ids] == [shop.base]  # forward: a new commit, history intact


def test_rollback_to_a_sha_from_the_files_git_history(shop: Shop) -> None:
    shop.deploy.commit({"environments/production/api.deploy": f"{API2}\n"}, message="api 2, no history kept")
    code, out = run("rollback", "api", "--env", "production", "--to", API1[:8], "--repo", shop.path)
    assert (code, out) == (0, f"rolled back api in production: {API2[:12]} -> {API1[:12]} "
                              "(environments/production/api.deploy)\n")


def test_rollback_refuses_a_sha_that_never_ran_there_unless_forced(shop: Shop) -> None:
    code, out = run("rollback", "web", "--env", "production", "--to", shop.w2, "--repo", shop.path)
    assert (code, out) == (2, f"Error: environments/production/web.deploy: '{shop.w2}' never ran in this "
                              "environment (not in the file's history nor its git history); check the SHA, "
                              "or pass --force with the full SHA\n")
    assert shop.file("production", "web") == f"{shop.w1}\n* First web\n"
    code, _ = run("rollback", "web", "--env", "production", "--to", shop.w2, "--force", "--repo", shop.path)
    assert code == 0 and shop.file("production", "web").startswith(f"{shop.w2}\n")


def test_rollback_with_no_earlier_sha_says_so(shop: Shop) -> None:
    code, out = run("rollback", "web", "--env", "production", "--repo", shop.path)
    assert (code, out) == (2, "Error: environments/production/web.deploy: only 0 earlier SHAs listed below "
                              "line 1; use --to SHA\n")


# -- diff ----------------------------------------------------------------------------------------


def test_diff_text_shows_table_commits_and_passes_gates(shop: Shop) -> None:
    run("promote", "web", "--from", "staging", "--to", "production", "--commit", "--repo", shop.path)
    code, out = run("diff", "--base", shop.base, "--head", "HEAD", "--repo", shop.path)
    head = shop.deploy.head
    assert code == 0, out
    assert out.splitlines() == [
        "ENV         APP  CHANGE   OLD           NEW           APPROVAL                GATES",
        f"production  web  changed  {shop.w1[:12]}  {shop.w3[:12]}  @shop/release-managers  ok: staging",
        "",
        "production/web (environments/production/web.deploy:1)",
        f"  image: registry.example.com/shop/web:{shop.w3}",
        f"  commits {shop.w1[:12]}..{shop.w3[:12]} (2):",
        f"    {shop.w3[:12]} Bo: Search: fix paging",
        f"    {shop.w2[:12]} Dana Deployer: Checkout: delivery dates",
        f"1 change from {shop.base} ({shop.base[:12]}) to HEAD ({head[:12]}): ok",
    ]


def test_diff_fails_a_gate_when_staging_and_production_change_in_one_pr(shop: Shop) -> None:
    shop.deploy.commit({"environments/staging/api.deploy": f"{'3' * 40}\n",
                        "environments/production/api.deploy": f"{'3' * 40}\n"}, message="api 3 everywhere")
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", shop.path)
    assert code == 1
    lines = out.splitlines()
    assert lines[1] == f"production  api  changed  {API1[:12]}  {'3' * 12}  @shop/release-managers  FAILED: staging"
    assert lines[2] == f"staging     api  changed  {API2[:12]}  {'3' * 12}  -                       -"
    assert (f"error: environments/production/api.deploy:1: {'3' * 12} has not run successfully in staging "
            "(as the first line of environments/staging/api.deploy in an earlier commit); environment production "
            "requires staging first: deploy it to "
            "staging (deployctl promote api --from <env> --to staging) and promote from there") in lines
    assert lines[-1].endswith(": 1 error; fix before merging")


def test_diff_warns_when_the_new_sha_is_not_a_descendant(shop: Shop) -> None:
    shop.deploy.commit({"environments/staging/web.deploy": f"{shop.w2}\n"}, message="web back")
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", shop.path)
    assert code == 0
    assert f"  commits {shop.w3[:12]}..{shop.w2[:12]} (0):" in out.splitlines()
    assert (f"  warning: {shop.w2[:12]} is not a descendant of {shop.w3[:12]}: this goes backwards (or "
            "sideways); commits in the old SHA are not in the new one") in out.splitlines()


def test_diff_markdown_is_a_table_then_folded_details(shop: Shop) -> None:
    shop.deploy.commit({"environments/production/web.deploy": f"{shop.w3}\n"}, message="web 3")
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", shop.path, "-o", "markdown")
    assert code == 0
    assert out.splitlines()[:5] == [
        "### deployctl diff: `main~1` → `main`",
        "",
        "| Env | App | Change | From | To | Approval | Gates |",
        "|---|---|---|---|---|---|---|",
        f"| production | web | changed | `{shop.w1[:12]}` | `{shop.w3[:12]}` | @shop/release-managers | "
        "✅ ok: staging |",
    ]
    assert f"<details><summary>production/web: {shop.w1[:12]} → {shop.w3[:12]}, 2 commits</summary>" in out
    assert f"- `{shop.w3[:12]}` Search: fix paging (Bo)" in out
    assert out.rstrip().endswith("</details>")


def test_diff_escapes_control_characters_from_commit_messages_and_authors(shop: Shop) -> None:
    hostile = shop.web.commit({"app.py": "4"}, message="Fix\x1b]0;owned\x07 paging\x1b[2J\r`x`\n",
                              author=("Eve\x1b[8m", "eve@x.io"))
    shop.deploy.commit({"environments/staging/web.deploy": f"{hostile}\n"}, message="web 4")
    outputs = [run("diff", "--base", "main~1", "--head", "main", "--repo", shop.path, *fmt)[1]
               for fmt in ((), ("-o", "markdown"))]
    for out in outputs:
        assert not set(out) & {"\x1b", "\x07", "\r"}, out
    text, markdown = outputs
    assert f"    {hostile[:12]} Eve\\x1b[8m: Fix\\x1b]0;owned\\x07 paging\\x1b[2J\\x0d`x`" in text.splitlines()
    assert f"- `{hostile[:12]}` Fix\\x1b]0;owned\\x07 paging\\x1b[2J\\x0d\\x60x\\x60 (Eve\\x1b[8m)" in markdown.splitlines()


def test_diff_json_carries_gates_and_commits(shop: Shop) -> None:
    shop.deploy.commit({"environments/production/web.deploy": f"{shop.w3}\n"}, message="web 3")
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", shop.path, "-o", "json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    [t] = doc["targets"]
    assert (t["env"], t["app"], t["old_sha"], t["new_sha"], t["needs_approval"]) == (
        "production", "web", shop.w1, shop.w3, True)
    assert t["gates"][0]["passed"] is True and t["gates"][0]["source"] == "git"
    assert [c["sha"] for c in t["commits"]["commits"]] == [shop.w3, shop.w2]


def test_diff_with_an_unknown_ref_exits_2(shop: Shop) -> None:
    code, out = run("diff", "--base", "nope", "--repo", shop.path)
    assert code == 2 and out.startswith(f"Error: {shop.path}/: ref 'nope' does not resolve to a commit")


# -- validate's gates ---------------------------------------------------------------------------------


def test_validate_reports_a_gate_violation_naming_file_and_environment(shop: Shop) -> None:
    shop.deploy.commit({"environments/production/api.deploy": f"{'4' * 40}\n"}, message="api 4 in prod")
    code, out = run("validate", "--repo", shop.path)
    assert code == 1
    assert out.splitlines()[0] == (
        f"environments/production/api.deploy:1: {'4' * 12} has not run successfully in staging (as the first "
        "line of environments/staging/api.deploy in an earlier commit); environment production requires "
        "staging first: deploy it to staging "
        "(deployctl promote api --from <env> --to staging) and promote from there")
    code, out = run("validate", "--repo", shop.path, "--no-gates")
    assert code == 0, out


def test_validate_accepts_a_sha_that_staging_ran_earlier_in_git_history(shop: Shop) -> None:
    shop.deploy.commit({"environments/staging/api.deploy": f"{'5' * 40}\n"}, message="api 5 in staging")
    shop.deploy.commit({"environments/staging/api.deploy": f"{'6' * 40}\n"}, message="api 6, history dropped")
    shop.deploy.commit({"environments/production/api.deploy": f"{'5' * 40}\n"}, message="api 5 in prod")
    code, out = run("validate", "--repo", shop.path)
    assert code == 0, out


# -- codeowners ---------------------------------------------------------------------------------------


def test_codeowners_check_fails_when_stale_and_passes_after_write(shop: Shop) -> None:
    code, out = run("codeowners", "--check", "--repo", shop.path)
    assert (code, out) == (1, "Error: .github/CODEOWNERS does not exist; run deployctl codeowners --write "
                              "and commit it\n")
    code, out = run("codeowners", "--write", "--repo", shop.path)
    assert (code, out) == (0, "wrote .github/CODEOWNERS (2 entries)\n")
    code, out = run("codeowners", "--check", "--repo", shop.path)
    assert (code, out) == (0, "ok: .github/CODEOWNERS matches deployctl.yaml\n")
    config = shop.deploy.path / "deployctl.yaml"
    config.write_text(CONFIG.replace('["@shop/release-managers"]', '["@shop/release-managers", "@ana"]'))
    code, out = run("codeowners", "--check", "--repo", shop.path)
    assert (code, out) == (1, "Error: .github/CODEOWNERS is out of date with deployctl.yaml; run deployctl "
                              "codeowners --write and commit it\n")


def test_codeowners_prints_gitlab_syntax_and_keeps_hand_written_rules(shop: Shop) -> None:
    code, out = run("codeowners", "--format", "gitlab", "--repo", shop.path)
    assert code == 0
    assert out.splitlines()[1:4] == ["[deployctl]", "/environments/production/ @shop/release-managers",
                                     "/deployctl.yaml @shop/release-managers"]
    owners = Path(shop.path) / "CODEOWNERS"
    owners.write_text("* @shop/everyone\n")
    assert run("codeowners", "--write", "--format", "gitlab", "--repo", shop.path) == (
        0, "wrote CODEOWNERS (2 entries)\n")
    assert owners.read_text().startswith("* @shop/everyone\n\n# BEGIN deployctl")
    assert run("codeowners", "--check", "--format", "gitlab", "--repo", shop.path)[0] == 0
