"""on_verification_failure: roll-forward with a forge: a pull request on a real Gitea (built from Go modules)
that deploys the last verified SHA, for review; a local commit when no forge is configured. Real git and SQLite;
the audit history (a verified deploy, then one that failed verification) is written through the real store."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2
import pytest

from deployctl.app.verify import on_failure
from deployctl.devtools.gitea.server import GiteaServer
from deployctl.edges.audit.url import open_store
from deployctl.edges.git.repo import read_desired_state
from deployctl.model.audit import AuditStore
from deployctl.model.verification import CheckOutcome, Measurement, Verification
from tests.fixtures.auditdata import make_attempt
from tests.fixtures.gitea import ForgeRepo
from tests.integration.test_verify import config, sha

pytestmark = pytest.mark.integration
GOOD, BAD = sha("good"), sha("bad")


def deployed(store: AuditStore, new_sha: str, *, previous: str | None, value: float, at: datetime) -> Verification:
    """A succeeded rollout of web to staging and its verification (of the error ratio ``value``), recorded."""
    attempt = store.start(make_attempt(env="staging", app="web", new_sha=new_sha, previous_sha=previous,
                                       image=f"registry.example.com/shop/web:{new_sha}", started_at=at))
    store.finish(attempt, result="succeeded", finished_at=at + timedelta(seconds=5))
    passed = value < 0.01
    query = 'deploy_error_ratio{app="web",env="staging"}'
    check = CheckOutcome(name="error-rate", kind="query", query=query, wanted="result < 0.01", failure_limit=0,
                         measurements=(Measurement(at=at, value=value, passed=passed),))
    verification = Verification(
        attempt_id=attempt, env="staging", app="web", sha=new_sha,
        result="verified" if passed else "verification-failed",
        reason="error-rate: 1 of 1 passed" if passed else f"error-rate: {query} = {value}, wanted result < 0.01",
        checks=(check,), started_at=at + timedelta(seconds=5), finished_at=at + timedelta(seconds=35))
    store.record_verification(verification)
    return verification


def test_roll_forward_opens_one_pull_request_to_the_last_verified_sha_on_the_forge_else_commits(
    forge_repo: ForgeRepo, gitea: GiteaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forge_repo.commit({"deployctl.yaml": config("shop-staging", "shop-production"),
                       "environments/staging/web.deploy": f"{GOOD}\n"}, message="web good to staging")
    forge_repo.commit({"environments/staging/web.deploy": f"{BAD}\n{GOOD}\n"}, message="web bad to staging")
    forge_repo.push("main")
    local = forge_repo.local.path
    head_before = forge_repo.local.repo.head.peel().id
    monkeypatch.setenv("DEPLOYCTL_FORGE_TYPE", "gitea")
    monkeypatch.setenv("DEPLOYCTL_FORGE_URL", gitea.url)
    monkeypatch.setenv("DEPLOYCTL_FORGE_REPO", forge_repo.full_name)
    monkeypatch.setenv("DEPLOYCTL_FORGE_TOKEN", gitea.token("forge-admin"))
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        now = datetime.now(UTC)
        deployed(store, GOOD, previous=None, value=0.002, at=now - timedelta(minutes=10))
        failed = deployed(store, BAD, previous=GOOD, value=0.3, at=now - timedelta(minutes=2))
        desired = read_desired_state(str(local))

        action = on_failure(failed, desired, store=store, clusters=None, repo=str(local))
        assert action.startswith("opened pull request #"), action
        assert f"deploying the last verified SHA {GOOD[:12]} to staging, for review" in action
        (pr,) = forge_repo.api("GET", "/pulls?state=open")
        assert pr["head"]["ref"] == "deployctl/roll-forward-staging-web" and pr["base"]["ref"] == "main"
        assert pr["title"].startswith(f"Roll back web in staging to {GOOD[:12]}")
        assert BAD in pr["body"] and "= 0.3, wanted result < 0.01" in pr["body"] and GOOD in pr["body"]
        proposed = forge_repo.api("GET", f"/contents/environments/staging/web.deploy?ref={pr['head']['sha']}")
        assert base64.b64decode(proposed["content"]).decode().startswith(f"{GOOD}\n")
        # nothing applied or committed here: the branch is pushed, the work tree and HEAD are as they were
        assert forge_repo.local.repo.head.peel().id == head_before
        assert (local / "environments/staging/web.deploy").read_text().startswith(f"{BAD}\n")

        again = on_failure(failed, desired, store=store, clusters=None, repo=str(local))  # verify ran again
        assert again.startswith(f"updated pull request #{pr['number']} "), again
        assert [p["number"] for p in forge_repo.api("GET", "/pulls?state=open")] == [pr["number"]]

        # a forge that refuses (a revoked token): the local commit, saying why there is no pull request
        monkeypatch.setenv("DEPLOYCTL_FORGE_TOKEN", "revoked-token")
        refused = on_failure(failed, desired, store=store, clusters=None, repo=str(local))
        assert refused.startswith("no pull request (") and "; wrote commit " in refused, refused
        assert "revoked-token" not in refused
        head = forge_repo.local.repo.head.peel()
        assert head.message.startswith(f"Roll back web in staging to {GOOD[:12]}")
        forge_repo.local.repo.reset(head_before, pygit2.enums.ResetMode.HARD)

        for name in ("DEPLOYCTL_FORGE_TYPE", "DEPLOYCTL_FORGE_URL", "DEPLOYCTL_FORGE_REPO", "DEPLOYCTL_FORGE_TOKEN"):
            monkeypatch.delenv(name)
        local_only = on_failure(failed, desired, store=store, clusters=None, repo=str(local))
        assert local_only.startswith("wrote commit ") and local_only.endswith("to staging; push it for review")
        head = forge_repo.local.repo.head.peel()
        assert head.id != head_before and head.message.startswith(f"Roll back web in staging to {GOOD[:12]}")
        assert (local / "environments/staging/web.deploy").read_text().startswith(f"{GOOD}\n")
    finally:
        store.close()
