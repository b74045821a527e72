"""require_approval: forge end to end: a real Gitea (built from Go modules), the real control plane and real
git. Pull requests are opened, reviewed and merged on Gitea; the deploy repo is fetched back and reconciled."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from deployctl.app.run import run_reconcile
from deployctl.cli import main
from deployctl.devtools.gitea.server import GiteaServer
from deployctl.edges.audit.url import open_store
from deployctl.model.audit_target import AuditTarget
from deployctl.reconcile.options import ReconcileOptions, Timing
from tests.fixtures.gitea import ForgeRepo
from tests.integration.test_ui import get, start_ui

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


@dataclass(frozen=True)
class People:
    author: str  # opens the pull requests
    approver: str  # in approvers by name
    outsider: str  # not in approvers
    teammate: str  # in approvers through @org/sre only


@pytest.fixture(scope="module")
def people(gitea: GiteaServer) -> People:
    tag = uuid.uuid4().hex[:6]
    made = People(f"alice-{tag}", f"bob-{tag}", f"mallory-{tag}", f"carol-{tag}")
    for name in (made.author, made.approver, made.outsider, made.teammate):
        gitea.create_user(name)
    return made


def config(staging_ns: str, production_ns: str, org: str, people: People, production_extra: str = "") -> str:
    return (
        "version: 1\n"
        "apps:\n"
        f"  web:\n    image: {IMAGE}/web\n    pin: tag\n"
        "environments:\n"
        f"  staging:\n    namespace: {staging_ns}\n"
        f"  production:\n    namespace: {production_ns}\n"
        f'    approvers: ["@{people.approver}", "@{org}/sre"]\n'
        f"{production_extra or '    require_approval: forge' + chr(10)}"
    )


@dataclass
class Shop:
    repo: ForgeRepo
    people: People
    audit: str
    staging_ns: str
    production_ns: str
    branches: int = 0

    def change(self, files: dict[str, str], *, by: str | None = None) -> dict:
        """A pull request by the author (commits authored by ``by`` when given) with ``files``."""
        self.branches += 1
        branch = f"change-{self.branches}"
        who = by or self.people.author
        self.repo.commit(files, branch=branch, author=(who, f"{who}@example.com"))
        self.repo.push(branch, user=self.people.author)
        return self.repo.open_pr(branch, user=self.people.author)

    def push_to(self, pr: dict, files: dict[str, str], *, by: str) -> str:
        branch = pr["head"]["ref"]
        head = self.repo.commit(files, branch=branch, author=(by, f"{by}@example.com"))
        self.repo.push(branch, user=self.people.author)
        self.repo.wait_head(pr["number"], head)
        return head

    def production(self, word: str) -> dict[str, str]:
        return {"environments/production/web.deploy": f"{sha(word)}\n"}


@pytest.fixture
def shop(cluster, namespace, production_ns, forge_repo: ForgeRepo, people: People, gitea: GiteaServer, tmp_path,
         monkeypatch) -> Shop:
    """web running in staging and production; production needs a forge approval; the repo is on Gitea."""
    org = forge_repo.owner
    team = gitea.api("POST", f"/orgs/{org}/teams", {"name": "sre", "permission": "write", "includes_all_repositories":
                                                    True, "units": ["repo.code", "repo.pulls"]}, user="forge-admin")
    gitea.api("PUT", f"/teams/{team['id']}/members/{people.teammate}", user="forge-admin")
    for name in (people.author, people.approver, people.outsider):
        forge_repo.api("PUT", f"/collaborators/{name}", {"permission": "write"})
    cluster.deployment(namespace, "web", image=f"{IMAGE}/web:initial")
    cluster.deployment(production_ns, "web", image=f"{IMAGE}/web:initial")
    forge_repo.commit({
        "deployctl.yaml": config(namespace, production_ns, org, people),
        "environments/staging/web.deploy": f"{sha('web-1')}\n",
        "environments/production/web.deploy": f"{sha('web-1')}\n",
    }, message="Deploy tree")
    forge_repo.push("main")
    monkeypatch.setenv("DEPLOYCTL_FORGE_TYPE", "gitea")
    monkeypatch.setenv("DEPLOYCTL_FORGE_URL", gitea.url)
    monkeypatch.setenv("DEPLOYCTL_FORGE_REPO", forge_repo.full_name)
    monkeypatch.setenv("DEPLOYCTL_FORGE_TOKEN", gitea.token("forge-admin"))
    return Shop(forge_repo, people, f"sqlite:///{tmp_path / 'audit.db'}", namespace, production_ns)


def reconcile(cluster, shop: Shop):
    return run_reconcile(repo=str(shop.repo.local.path), ref="HEAD", kubeconfig=cluster.kubeconfig,
                         audit=AuditTarget(shop.audit), options=ReconcileOptions(timing=Timing(timeout=60)))


def image(cluster, namespace: str) -> str:
    return cluster.read_deployment(namespace, "web").spec.template.spec.containers[0].image


def outcomes(result) -> dict[str, tuple[str, str]]:
    return {o.env: (o.result, o.message) for o in result.outcomes}


def refused(cluster, shop: Shop, pr: dict | None, *words: str) -> str:
    """Reconcile; production must be refused (exit 2, image unchanged) with a message naming the rule,
    the pull request's URL and ``words``."""
    result = reconcile(cluster, shop)
    assert result.exit_code == 2, result.outcomes
    state, message = outcomes(result)["production"]
    assert state == "refused"
    assert "require_approval: forge" in message
    if pr is not None:
        assert pr["html_url"] in message
    for word in words:
        assert word in message
    assert image(cluster, shop.production_ns) == f"{IMAGE}/web:initial"
    return message


def test_an_approvers_approval_on_the_final_head_deploys_production_and_the_record_names_pr_and_approver(
        cluster, shop: Shop, tmp_path) -> None:
    pr = shop.change(shop.production("web-2"))
    review = shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver)
    shop.repo.merge(pr["number"])
    result = reconcile(cluster, shop)
    assert result.exit_code == 0, result.outcomes
    assert outcomes(result)["production"][0] == "succeeded"
    assert image(cluster, shop.production_ns) == f"{IMAGE}/web:{sha('web-2')}"
    store = open_store(shop.audit, create=False)
    try:
        [record] = store.query(env="production", app="web")
    finally:
        store.close()
    assert record.attempt.review is not None
    assert (record.attempt.review.number, record.attempt.review.url) == (pr["number"], pr["html_url"])
    [approval] = record.attempt.review.approvals
    assert (approval.who, approval.head_sha) == (f"@{shop.people.approver}", review["commit_id"])
    assert approval.when is not None
    out = CliRunner().invoke(main, ["history", "--audit", shop.audit, "--env", "production", "-o", "json"])
    assert out.exit_code == 0, out.output
    [event] = json.loads(out.output)
    assert event["pull_request"] == {"number": pr["number"], "url": pr["html_url"]}
    assert [a["who"] for a in event["approvals"]] == [f"@{shop.people.approver}"]
    table = CliRunner().invoke(main, ["history", "--audit", shop.audit, "--env", "production"])
    assert f"#{pr['number']} @{shop.people.approver}" in table.output
    ui = start_ui(tmp_path, shop.repo.local.path, shop.audit)
    try:
        code, body = get(ui.url("/ui/apps/web"))
    finally:
        ui.stop()
    assert code == 200
    assert f'<a href="{pr["html_url"]}" rel="noopener noreferrer">#{pr["number"]}</a>' in body
    assert f"approved by @{shop.people.approver} on {review['commit_id'][:12]}" in body


def test_an_approval_followed_by_a_new_push_is_stale_and_refused(cluster, shop: Shop) -> None:
    pr = shop.change(shop.production("web-2"))
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver)
    shop.push_to(pr, shop.production("web-3"), by=shop.people.author)
    shop.repo.merge(pr["number"])
    refused(cluster, shop, pr, "stale")


def test_an_approval_by_someone_not_in_approvers_is_refused(cluster, shop: Shop) -> None:
    pr = shop.change(shop.production("web-2"))
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.outsider)
    shop.repo.merge(pr["number"])
    refused(cluster, shop, pr, f"@{shop.people.outsider} is not one of the approvers")


def test_an_approver_who_authored_a_commit_in_the_pr_does_not_count(cluster, shop: Shop) -> None:
    pr = shop.change(shop.production("web-2"))
    head = shop.push_to(pr, {"environments/production/notes.txt": "bob was here\n"}, by=shop.people.approver)
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver, commit_id=head)
    shop.repo.merge(pr["number"])
    refused(cluster, shop, pr, "authored a commit")


def test_approve_then_request_changes_is_refused(cluster, shop: Shop) -> None:
    pr = shop.change(shop.production("web-2"))
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver)
    shop.repo.review(pr["number"], "REQUEST_CHANGES", user=shop.people.approver)
    shop.repo.merge(pr["number"])
    refused(cluster, shop, pr, "changes requested")


def test_a_dismissed_approval_is_refused(cluster, shop: Shop) -> None:
    pr = shop.change(shop.production("web-2"))
    review = shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver)
    shop.repo.dismiss(pr["number"], review["id"])
    shop.repo.merge(pr["number"])
    refused(cluster, shop, pr, "dismissed")


def test_a_team_approver_is_resolved_through_the_forge_after_a_squash_merge(cluster, shop: Shop) -> None:
    pr = shop.change(shop.production("web-2"))
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.teammate)
    shop.repo.merge(pr["number"], style="squash")
    result = reconcile(cluster, shop)
    assert result.exit_code == 0, result.outcomes
    assert image(cluster, shop.production_ns) == f"{IMAGE}/web:{sha('web-2')}"


def test_a_direct_push_is_refused(cluster, shop: Shop) -> None:
    shop.repo.commit(shop.production("web-2"), message="hotfix straight to main")
    shop.repo.push("main")
    refused(cluster, shop, None, "direct push")


def test_a_pr_that_drops_require_approval_and_changes_production_is_refused(cluster, shop: Shop) -> None:
    text = config(shop.staging_ns, shop.production_ns, shop.repo.owner, shop.people, "    require_approval: false\n")
    pr = shop.change({"deployctl.yaml": text, **shop.production("web-2")})
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.outsider)
    shop.repo.merge(pr["number"])
    refused(cluster, shop, pr, "weakens", "judged under the settings before it")


def test_gitea_stopped_refuses_production_clearly_and_staging_still_deploys(cluster, shop: Shop,
                                                                              gitea: GiteaServer) -> None:
    pr = shop.change({**shop.production("web-2"), "environments/staging/web.deploy": f"{sha('web-2')}\n"})
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver)
    shop.repo.merge(pr["number"])
    gitea.stop()
    try:
        result = reconcile(cluster, shop)
    finally:
        gitea.start()
    assert result.exit_code == 2, result.outcomes
    state, message = outcomes(result)["production"]
    assert state == "refused"
    assert "cannot be reached" in message and "fail closed" in message and gitea.url in message
    assert outcomes(result)["staging"][0] == "succeeded"
    assert image(cluster, shop.staging_ns) == f"{IMAGE}/web:{sha('web-2')}"
    assert image(cluster, shop.production_ns) == f"{IMAGE}/web:initial"


def test_promote_open_pr_opens_one_pull_request_a_second_run_updates_it_and_approved_and_merged_it_deploys(
        cluster, shop: Shop, monkeypatch) -> None:
    shop.repo.commit({"environments/staging/web.deploy": f"{sha('web-2')}\n{sha('web-1')}\n"}, message="staging")
    shop.repo.push("main")
    monkeypatch.chdir(shop.repo.local.path)
    args = ["promote", "web", "--from", "staging", "--to", "production", "--open-pr", "-o", "json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    opened = json.loads(first.output)["pull_request"]
    assert opened["created"] is True
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    again = json.loads(second.output)["pull_request"]
    assert (again["number"], again["created"]) == (opened["number"], False)
    open_prs = shop.repo.api("GET", "/pulls?state=open")
    assert [p["number"] for p in open_prs] == [opened["number"]]
    [pr] = open_prs
    assert "production" in pr["body"] and sha("web-2")[:12] in pr["body"]  # the diff markdown
    assert (shop.repo.local.path / "environments/production/web.deploy").read_text() == f"{sha('web-1')}\n"
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver)
    shop.repo.merge(pr["number"])
    result = reconcile(cluster, shop)
    assert result.exit_code == 0, result.outcomes
    assert image(cluster, shop.production_ns) == f"{IMAGE}/web:{sha('web-2')}"


def test_open_pr_refuses_a_remote_on_another_host(shop: Shop, monkeypatch) -> None:
    shop.repo.commit({"environments/staging/web.deploy": f"{sha('web-2')}\n{sha('web-1')}\n"}, message="staging")
    shop.repo.local.repo.remotes.set_url("origin", "https://elsewhere.example.com/acme/deploy.git")
    monkeypatch.chdir(shop.repo.local.path)
    out = CliRunner().invoke(main, ["promote", "web", "--from", "staging", "--to", "production", "--open-pr"])
    assert out.exit_code == 1
    assert "is not on the forge's host" in out.output and "the forge token is sent there only" in out.output


def plan_status(shop: Shop, commit: str) -> str:
    """The latest deployctl/plan status of a commit (Gitea's combined status keeps one per context)."""
    combined = shop.repo.api("GET", f"/commits/{commit}/status")
    [status] = [s for s in combined["statuses"] if s["context"] == "deployctl/plan"]
    return str(status["status"])


def test_diff_comment_posts_one_comment_and_sets_the_plan_status(shop: Shop) -> None:
    pr = shop.change(shop.production("web-2"))
    args = ["diff", "--repo", str(shop.repo.local.path), "--base", "main", "--head", pr["head"]["ref"],
            "--comment", str(pr["number"])]
    for _ in range(2):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0, out.output
    comments = shop.repo.api("GET", f"/issues/{pr['number']}/comments")
    assert len(comments) == 1 and "<!-- deployctl-diff -->" in comments[0]["body"]
    assert sha("web-2")[:12] in comments[0]["body"]
    assert plan_status(shop, pr["head"]["sha"]) == "success"

    head = shop.push_to(pr, {"environments/production/web.deploy": "not-a-sha\n"}, by=shop.people.author)
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1
    assert len(shop.repo.api("GET", f"/issues/{pr['number']}/comments")) == 1
    assert plan_status(shop, head) == "failure"


def test_rollback_open_pr_opens_a_pull_request_that_rolls_production_back(shop: Shop, monkeypatch) -> None:
    shop.repo.commit({"environments/production/web.deploy": f"{sha('web-2')}\n{sha('web-1')}\n"}, message="web-2")
    shop.repo.push("main")
    monkeypatch.chdir(shop.repo.local.path)
    out = CliRunner().invoke(main, ["rollback", "web", "--env", "production", "--open-pr", "-m", "500s", "-o", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["branch"] == "deployctl/rollback-production-web" and doc["pull_request"]["created"] is True
    pr = shop.repo.api("GET", f"/pulls/{doc['pull_request']['number']}")
    files = shop.repo.api("GET", f"/contents/environments/production/web.deploy?ref={pr['head']['sha']}")
    assert base64.b64decode(files["content"]).decode().startswith(f"{sha('web-1')}\n")


def test_the_forges_answer_is_kept_briefly_so_the_controllers_runs_do_not_ask_it_every_interval(
        shop: Shop, gitea: GiteaServer) -> None:
    from deployctl.edges.forge import ForgeSettings
    from deployctl.edges.git.repo import read_desired_state
    from deployctl.edges.http import HttpClient
    from deployctl.reconcile import policy

    class Counting(HttpClient):
        calls = 0

        def request(self, method, url, **kw):  # type: ignore[no-untyped-def, override]
            Counting.calls += 1
            return super().request(method, url, **kw)

    pr = shop.change(shop.production("web-2"))
    shop.repo.review(pr["number"], "APPROVED", user=shop.people.approver)
    shop.repo.merge(pr["number"])
    desired = read_desired_state(str(shop.repo.local.path), ref="HEAD")
    forge = ForgeSettings("gitea", gitea.url, shop.repo.full_name, gitea.token("forge-admin"))
    http = Counting(user_agent="test")
    first = policy.forge_verdicts(desired, repo=shop.repo.local.path, forge=forge, http=http)
    asked = Counting.calls
    second = policy.forge_verdicts(desired, repo=shop.repo.local.path, forge=forge, http=http)
    assert first[("production", "web")].approved and second[("production", "web")].approved
    assert asked > 0 and Counting.calls == asked
