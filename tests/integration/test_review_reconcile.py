"""The review workflow end to end on the real control plane: promote then reconcile, promotion gates,
freeze windows and their audited override, production approvals (SSH and GPG signed commits, trailers inside them)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest
from click.testing import CliRunner

from deployctl.app.promote import promote_apps
from deployctl.app.run import run_reconcile
from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.git.repo import read_desired_state
from deployctl.model.audit_target import AUDIT_OFF, AuditTarget
from deployctl.reconcile import policy
from deployctl.reconcile.options import ReconcileOptions, Selection, Timing
from tests.fixtures.gitrepo import GitRepo

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def config(staging_ns: str, production_ns: str, production_extra: str = "") -> str:
    return (
        "version: 1\n"
        "apps:\n"
        f"  web:\n    image: {IMAGE}/web\n    pin: tag\n"
        "environments:\n"
        f"  staging:\n    namespace: {staging_ns}\n"
        f"  production:\n    namespace: {production_ns}\n    requires: [staging]\n"
        '    approvers: ["@shop/release-managers", "rita@example.com"]\n'
        f"{production_extra}"
    )


FREEZE = (
    "    freeze:\n"
    "      - start: 2020-01-01T00:00:00Z\n"
    "        end: 2099-01-01T00:00:00Z\n"
    "        reason: Migration weekend\n"
)


@pytest.fixture
def shop(cluster, namespace, production_ns, make_repo, tmp_path):
    """web running in both namespaces; staging at web-2, production at web-1; an audit store."""
    cluster.deployment(namespace, "web", image=f"{IMAGE}/web:initial")
    cluster.deployment(production_ns, "web", image=f"{IMAGE}/web:initial")

    def make(production_extra: str = "") -> GitRepo:
        repo = make_repo()
        repo.repo.config["user.name"] = "Dana Deployer"
        repo.repo.config["user.email"] = "dana@example.com"
        repo.commit({
            "deployctl.yaml": config(namespace, production_ns, production_extra),
            "environments/staging/web.deploy": f"{sha('web-2')}\n{sha('web-1')}\n",
            "environments/production/web.deploy": f"{sha('web-1')}\n",
        }, message="Deploy tree")
        return repo

    return make, f"sqlite:///{tmp_path / 'audit.db'}"


def reconcile(cluster, repo: GitRepo, audit_url: str | None, *, envs: tuple[str, ...] = ()):
    options = ReconcileOptions(selection=Selection(envs=envs), timing=Timing(timeout=60))
    return run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=cluster.kubeconfig, audit=AuditTarget(audit_url) if audit_url is not None else AUDIT_OFF, options=options)


def image(cluster, namespace: str) -> str:
    return cluster.read_deployment(namespace, "web").spec.template.spec.containers[0].image


def outcomes(result) -> dict[str, tuple[str, str]]:
    return {o.env: (o.result, o.message) for o in result.outcomes}


def records(audit_url: str, env: str):
    store = open_store(audit_url, create=False)
    try:
        return store.query(env=env, app="web")
    finally:
        store.close()


def test_promote_then_reconcile_rolls_the_staging_sha_out_to_production(cluster, namespace, production_ns,
                                                                       shop) -> None:
    make, audit_url = shop
    repo = make()
    first = reconcile(cluster, repo, audit_url, envs=("staging",))
    assert first.exit_code == 0 and outcomes(first)["staging"][0] == "succeeded"
    promoted, commit = promote_apps(str(repo.path), ["web"], from_env="staging", to_env="production",
                                    commit=True)
    assert commit == repo.head and promoted[0].new_sha == sha("web-2")
    second = reconcile(cluster, repo, audit_url)
    assert second.exit_code == 0, second.outcomes
    assert {o.env: o.result for o in second.outcomes} == {"production": "succeeded", "staging": "in-sync"}
    assert image(cluster, production_ns) == f"{IMAGE}/web:{sha('web-2')}"
    [record] = records(audit_url, "production")
    assert (record.result, record.attempt.new_sha, record.attempt.file_commit) == ("succeeded", sha("web-2"),
                                                                                 commit)


def test_gate_violation_is_refused_by_reconcile_and_audited(cluster, namespace, production_ns, shop) -> None:
    make, audit_url = shop
    repo = make()
    repo.commit({"environments/production/web.deploy": f"{sha('web-9')}\n"}, message="web-9 straight to prod")
    # validate and diff refuse it too
    assert CliRunner().invoke(main, ["validate", "--repo", str(repo.path)]).exit_code == 1
    assert CliRunner().invoke(main, ["diff", "--base", "main~1", "--repo", str(repo.path)]).exit_code == 1
    for source in (audit_url, None):  # gates from the audit history, then from git (no audit store)
        result = reconcile(cluster, repo, source, envs=("production",))
        assert result.exit_code == 2
        status, message = outcomes(result)["production"]
        assert status == "refused"
        assert message.startswith(f"promotion gate: environments/production/web.deploy:1: {sha('web-9')[:12]} "
                                  "has not run successfully in staging")
    assert image(cluster, production_ns) == f"{IMAGE}/web:initial"
    [record] = records(audit_url, "production")
    assert record.result == "refused" and "requires staging first" in (record.error or "")


def test_audit_gate_needs_a_successful_run_not_just_a_deploy_file(cluster, namespace, production_ns,
                                                                  shop) -> None:
    make, audit_url = shop
    repo = make()
    repo.commit({"environments/production/web.deploy": f"{sha('web-2')}\n"}, message="web-2 to prod")
    refused = reconcile(cluster, repo, audit_url, envs=("production",))
    assert outcomes(refused)["production"][0] == "refused"  # staging never ran web-2 according to the audit
    assert reconcile(cluster, repo, None, envs=("production",)).exit_code == 0  # git history: it is in staging


def test_a_forged_staging_success_does_not_open_the_production_gate(cluster, namespace, production_ns,
                                                                    shop) -> None:
    make, audit_url = shop
    repo = make()
    assert reconcile(cluster, repo, audit_url, envs=("staging",)).exit_code == 0  # a true run: web-2 in staging
    repo.commit({"environments/staging/web.deploy": f"{sha('web-3')}\n"}, message="web-3 to staging")
    repo.commit({"environments/production/web.deploy": f"{sha('web-3')}\n"}, message="web-3 to prod")
    # Someone holding the store's write access, not deployctl, records web-3 as a staging success.
    conn = sqlite3.connect(audit_url.removeprefix("sqlite://"))
    conn.execute(
        "INSERT INTO attempts (env, app, namespace, workloads, new_sha, image, deploy_file, reviewers, trigger, "
        "actor_user, actor_host, started_at) SELECT 'staging', app, namespace, workloads, ?, image, deploy_file, "
        "reviewers, trigger, actor_user, actor_host, started_at FROM attempts WHERE id = 1", (sha("web-3"),))
    forged = conn.execute("SELECT max(id) FROM attempts").fetchone()[0]
    conn.execute("INSERT INTO outcomes (attempt_id, result, finished_at, recorded_at) "
                 "SELECT ?, 'succeeded', finished_at, recorded_at FROM outcomes WHERE attempt_id = 1", (forged,))
    conn.commit()
    conn.close()
    assert [r.result for r in records(audit_url, "staging")][:1] == ["succeeded"]  # history shows it as a success

    refused = reconcile(cluster, repo, audit_url, envs=("production",))
    status, message = outcomes(refused)["production"]
    assert refused.exit_code == 2 and status == "refused"
    assert (f"{sha('web-3')[:12]} has not run successfully in staging (in the audit history, as the first line of "
            "environments/staging/web.deploy in an earlier commit); not counted: attempt "
            f"{forged} was inserted with SQL: it carries no chain hash") in message
    assert image(cluster, production_ns) == f"{IMAGE}/web:initial"


def test_freeze_blocks_reconcile_and_the_override_is_audited(cluster, namespace, production_ns, shop) -> None:
    make, audit_url = shop
    repo = make(FREEZE)
    repo.commit({"environments/production/web.deploy": f"{sha('web-2')}\n"}, message="web-2 to prod")
    frozen = reconcile(cluster, repo, None, envs=("production",))
    status, message = outcomes(frozen)["production"]
    assert status == "refused" and frozen.exit_code == 2
    assert "environments.production.freeze[0] freezes production until 2099-01-01T00:00Z (Migration weekend)" \
        in message
    assert image(cluster, production_ns) == f"{IMAGE}/web:initial"

    args = ["reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--env", "production",
            "--audit", audit_url, "--timeout", "60"]
    no_reason = CliRunner().invoke(main, [*args, "--override-freeze"])
    assert no_reason.exit_code == 2
    assert "Error: --override-freeze needs --reason TEXT (it goes into the audit history)" in no_reason.output
    # the audit store has no staging run yet: let the gate pass from git by reconciling staging first
    assert reconcile(cluster, repo, audit_url, envs=("staging",)).exit_code == 0
    done = CliRunner().invoke(main, [*args, "--override-freeze", "--reason", "INC-42 hotfix"])
    assert done.exit_code == 0, done.output
    assert image(cluster, production_ns) == f"{IMAGE}/web:{sha('web-2')}"
    [record] = records(audit_url, "production")
    assert record.result == "succeeded"
    assert record.error is not None and record.error.startswith("freeze overridden by ")
    assert record.error.endswith(": INC-42 hotfix (environments.production.freeze[0]: Migration weekend, "
                                 "until 2099-01-01T00:00Z)")


def test_staging_history_written_in_the_production_commit_is_refused_by_git_mode_reconcile(
        cluster, namespace, production_ns, shop) -> None:
    make, _ = shop
    repo = make()
    repo.commit({"environments/staging/web.deploy": f"{sha('web-2')}\n{sha('web-9')}\n",
                 "environments/production/web.deploy": f"{sha('web-9')}\n"}, message="web-9 'ran in staging'")
    result = reconcile(cluster, repo, None, envs=("production",))
    assert result.exit_code == 2
    status, message = outcomes(result)["production"]
    assert status == "refused" and message.startswith(
        f"promotion gate: environments/production/web.deploy:1: {sha('web-9')[:12]} has not run successfully in "
        "staging (as the first line of environments/staging/web.deploy in an earlier commit)")
    assert image(cluster, production_ns) == f"{IMAGE}/web:initial"


def test_unapproved_production_commit_is_refused_and_a_reviewed_merge_is_applied(cluster, namespace,
                                                                                 production_ns, shop, rita_allowed,
                                                                                 monkeypatch) -> None:
    make, _ = shop
    allowed, rita, _ = rita_allowed
    monkeypatch.setenv(policy.ALLOWED_SIGNERS_ENV, str(allowed))
    repo = make("    require_approval: true\n")
    files = {"environments/production/web.deploy": f"{sha('web-2')}\n{sha('web-1')}\n"}
    direct = repo.commit(files, message="web-2 to prod, unreviewed")
    refused = reconcile(cluster, repo, None, envs=("production",))
    status, message = outcomes(refused)["production"]
    assert status == "refused"
    assert message == (
        "approval required: environments/production/web.deploy: no commit signed by an allowed signer other than "
        "the change's author (dana@example.com) approves it (approvers: @shop/release-managers, rita@example.com); "
        "merge it through a reviewed pull request")
    assert image(cluster, production_ns) == f"{IMAGE}/web:initial"

    # the same change as a reviewed pull request: a branch commit merged by Rita, signed, with her trailer
    base = str(repo.repo.revparse_single("main~1").id)
    repo.repo.references["refs/heads/main"].set_target(base)
    branch = repo.commit(files, branch="pr-7", parents=[base], message="web-2 to prod")
    signed_commit(repo, {"web.deploy": files["environments/production/web.deploy"]}, rita, author=RITA,
                  merge=branch, message="Merge pull request #7\n\nReviewed-by: Rita Release <rita@example.com>\n")
    assert direct not in {str(p) for p in repo.repo.head.peel(pygit2.Commit).parent_ids}
    applied = reconcile(cluster, repo, None, envs=("production",))
    assert applied.exit_code == 0, applied.outcomes
    assert image(cluster, production_ns) == f"{IMAGE}/web:{sha('web-2')}"


# -- approvals without a cluster: trailers and signatures ------------------------------------------------


@pytest.fixture
def approval_repo(make_repo: Callable[..., GitRepo]) -> GitRepo:
    repo = make_repo()
    repo.commit({
        "deployctl.yaml": config("s", "p", "    require_approval: true\n"),
        "environments/staging/web.deploy": f"{sha('web-2')}\n",
        "environments/production/web.deploy": f"{sha('web-1')}\n",
    }, message="Deploy tree")
    return repo


def verdict(repo: GitRepo, **kw) -> policy.Verdict:
    desired = read_desired_state(repo.path)
    return policy.approval_verdicts(repo.path, desired, ref="HEAD", **kw)[("production", "web")]


RITA, DANA = ("Rita Release", "rita@example.com"), ("Dana Deployer", "dana@example.com")


def signed_commit(repo: GitRepo, files: dict[str, str], sign: Callable[[bytes], bytes], *,
                  author: tuple[str, str] = DANA, merge: str | None = None, message: str = "web-2 to prod\n") -> str:
    """A commit on main changing production's ``files``, signed with ``sign``; with ``merge``, a merge
    commit of main and that branch commit."""
    parent = repo.repo.head.peel(pygit2.Commit)
    builder = repo.repo.TreeBuilder(parent.tree)
    env_tree = repo.repo[parent.tree["environments"].id]
    prod = repo.repo.TreeBuilder(repo.repo[env_tree["production"].id])
    for name, text in files.items():
        prod.insert(name, repo.repo.create_blob(text.encode()), pygit2.GIT_FILEMODE_BLOB)
    envs = repo.repo.TreeBuilder(env_tree)
    envs.insert("production", prod.write(), pygit2.GIT_FILEMODE_TREE)
    builder.insert("environments", envs.write(), pygit2.GIT_FILEMODE_TREE)
    who = pygit2.Signature(*author, 1717405200, 0)
    parents = [parent.id] + ([pygit2.Oid(hex=merge)] if merge else [])
    content = repo.repo.create_commit_string(who, who, message, builder.write(), parents)
    oid = repo.repo.create_commit_with_signature(content, sign(content.encode()).decode())
    repo.repo.references["refs/heads/main"].set_target(oid)
    return str(oid)


def ssh_key(directory: Path, name: str) -> Path:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def ssh_signer(key: Path) -> Callable[[bytes], bytes]:
    def sign(data: bytes) -> bytes:
        return subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", "git"], input=data,
                              capture_output=True, check=True).stdout

    return sign


def test_an_unsigned_merge_trailer_naming_an_approver_does_not_count(approval_repo: GitRepo) -> None:
    files = {"environments/production/web.deploy": f"{sha('web-2')}\n"}
    branch = approval_repo.commit(files, branch="pr", author=DANA)
    merge = approval_repo.commit(files, parents=[str(approval_repo.repo.head.target), branch], message="Merge",
                                 author=DANA, trailers=["Reviewed-by: Rita Release <rita@example.com>"])
    result = verdict(approval_repo)
    assert not result
    assert f"{merge[:12]} has a trailer but is not signed, so it does not count" in result.evidence


@pytest.fixture
def rita_allowed(tmp_path: Path) -> tuple[Path, Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """An allowed-signers file holding Rita's SSH key; Rita's and Mallory's signing functions."""
    rita, mallory = ssh_key(tmp_path, "rita"), ssh_key(tmp_path, "mallory")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"rita@example.com {Path(f'{rita}.pub').read_text()}")
    return allowed, ssh_signer(rita), ssh_signer(mallory)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_a_trailer_in_a_merge_signed_by_an_allowed_signer_approves_the_change(approval_repo: GitRepo,
                                                                              rita_allowed) -> None:
    allowed, rita, _ = rita_allowed
    files = {"environments/production/web.deploy": f"{sha('web-2')}\n"}
    branch = approval_repo.commit(files, branch="pr", author=DANA)
    merge = signed_commit(approval_repo, {"web.deploy": f"{sha('web-2')}\n"}, rita, author=RITA, merge=branch,
                          message="Merge pull request #7\n\nReviewed-by: Rita Release <rita@example.com>\n")
    assert verdict(approval_repo, allowed_signers=allowed) == policy.Verdict(
        True, f"commit {merge[:12]} signed by rita@example.com (ssh), approved by rita@example.com")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_an_allowed_signer_approving_their_own_change_does_not_count(approval_repo: GitRepo, rita_allowed) -> None:
    allowed, rita, _ = rita_allowed
    files = {"environments/production/web.deploy": f"{sha('web-2')}\n"}
    branch = approval_repo.commit(files, branch="pr", author=RITA)
    merge = signed_commit(approval_repo, {"web.deploy": f"{sha('web-2')}\n"}, rita, author=RITA, merge=branch,
                          message="Merge\n\nApproved-by: Rita Release <rita@example.com>\n")
    result = verdict(approval_repo, allowed_signers=allowed)
    assert not result
    assert f"{merge[:12]} is signed by rita@example.com (ssh), the change's own author" in result.evidence
    own = signed_commit(approval_repo, {"web.deploy": f"{sha('web-3')}\n"}, rita, author=RITA)
    result = verdict(approval_repo, allowed_signers=allowed)
    assert not result and f"{own[:12]} is signed by rita@example.com (ssh), the change's own author" in result.evidence


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_a_commit_signed_by_an_allowed_ssh_key_is_approved_and_another_key_is_not(approval_repo: GitRepo,
                                                                                  rita_allowed) -> None:
    allowed, rita, mallory = rita_allowed
    signed = signed_commit(approval_repo, {"web.deploy": f"{sha('web-2')}\n"}, rita)
    assert verdict(approval_repo, allowed_signers=allowed) == policy.Verdict(
        True, f"commit {signed[:12]} signed by rita@example.com (ssh)")
    assert not verdict(approval_repo)  # no allowed-signers file configured: a signature proves nothing

    signed_commit(approval_repo, {"web.deploy": f"{sha('web-3')}\n"}, mallory)
    result = verdict(approval_repo, allowed_signers=allowed)
    assert not result and "has an SSH signature by no allowed signer" in result.evidence


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
def test_a_commit_signed_by_a_key_in_the_approvers_keyring_is_approved(approval_repo: GitRepo) -> None:
    home = Path(tempfile.mkdtemp(prefix="dgpg-"))  # short: gpg-agent's socket path has a length limit
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    try:
        home.chmod(0o700)
        subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Rita <rita@example.com>",
                        "ed25519", "sign", "never"], env=env, capture_output=True, check=True)

        def sign(data: bytes) -> bytes:
            return subprocess.run(["gpg", "--batch", "--armor", "--detach-sign"], input=data, env=env,
                                  capture_output=True, check=True).stdout

        signed = signed_commit(approval_repo, {"web.deploy": f"{sha('web-2')}\n"}, sign)
        result = verdict(approval_repo, gnupg_home=home)
        assert result.approved and result.evidence.startswith(f"commit {signed[:12]} signed by GPG key ")
        assert result.evidence.endswith(" (Rita <rita@example.com>)")
        own = signed_commit(approval_repo, {"web.deploy": f"{sha('web-3')}\n"}, sign, author=RITA)
        result = verdict(approval_repo, gnupg_home=home)
        assert not result and f"{own[:12]} is signed by GPG key " in result.evidence
        empty = Path(tempfile.mkdtemp(prefix="dgpg-"))
        empty.chmod(0o700)
        assert not verdict(approval_repo, gnupg_home=empty)
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**env, "GNUPGHOME": str(empty)}, check=False)
        shutil.rmtree(empty, ignore_errors=True)
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)
