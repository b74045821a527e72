"""The git edge: the desired state read from real repos (bare and non-bare) at any ref, the work
tree, source-repo checks, commit details and file history."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest

from deployctl.edges.git.history import CommitInfo, commit_info, last_change, read_file_at
from deployctl.edges.git.repo import RepoError, read_desired_state
from tests.fixtures.gitrepo import GitRepo, Submodule, Symlink, example_files

pytestmark = pytest.mark.integration

MakeRepo = Callable[..., GitRepo]
SHA_A = "dd4200d8a5c0364c5da1c74adaa3feb4c32b718f"
SHA_B = "dc4f7d806af0f6b64151d78a5b029e0c39717437"
CONFIG = (
    b"version: 1\napps:\n  web: {image: r.example.com/web}\n"
    b"environments:\n  staging: {namespace: shop-staging}\n"
)


def test_example_repo_reads_at_head_with_every_target(deploy_repo: GitRepo) -> None:
    state = read_desired_state(deploy_repo.path)
    assert state.ok, state.problems
    assert state.commit == deploy_repo.head and state.ref == "HEAD"
    assert [(t.env, t.app) for t in state.targets] == [
        ("production", "api"),
        ("production", "web"),
        ("production", "worker"),
        ("staging", "api"),
        ("staging", "web"),
        ("staging", "worker"),
    ]
    web = state.target("production", "web")
    assert web is not None
    assert web.sha == SHA_B
    assert web.image == f"registry.example.com/shop/web:{SHA_B}"
    assert (web.namespace, web.container, web.path, web.line, web.depends_on) == (
        "shop",
        "web",
        "environments/production/web.deploy",
        1,
        ("api",),
    )


def test_production_shas_of_the_example_ran_in_staging_first() -> None:
    files = example_files()
    for app in ("web", "api", "worker"):
        prod_sha = files[f"environments/production/{app}.deploy"].split()[0]
        assert prod_sha in files[f"environments/staging/{app}.deploy"].split(), app


def test_bare_repo_reads_at_branch_tag_sha_and_relative_refs(make_repo: MakeRepo) -> None:
    repo = make_repo("deploy.git", bare=True)
    first = repo.commit({"deployctl.yaml": CONFIG, "environments/staging/web.deploy": SHA_A + "\n"})
    repo.tag("v1", first)
    second = repo.commit({"environments/staging/web.deploy": SHA_B + "\n"})
    assert read_desired_state(repo.path, ref="main").targets[0].sha == SHA_B
    assert read_desired_state(repo.path, ref="HEAD").commit == second
    for ref in ("v1", first, first[:10], "main~1", "HEAD^"):
        state = read_desired_state(repo.path, ref=ref)
        assert (state.commit, state.targets[0].sha, state.ref) == (first, SHA_A, ref)


def test_reads_the_commit_not_the_checkout(deploy_repo: GitRepo) -> None:
    web = deploy_repo.path / "environments/staging/web.deploy"
    web.write_text("not-a-sha\n")
    assert read_desired_state(deploy_repo.path).ok
    state = read_desired_state(deploy_repo.path, worktree=True)
    assert [str(p) for p in state.errors] == [
        "environments/staging/web.deploy:1: 'not-a-sha' is not a commit SHA; "
        "write the full 40-character commit SHA (git rev-parse <commit>)"
    ]
    assert (state.commit, state.ref) == (None, "worktree")
    assert ("staging", "web") in state.invalid()


def test_worktree_sees_new_uncommitted_files(deploy_repo: GitRepo) -> None:
    (deploy_repo.path / "environments/staging/cart.deploy").write_text(SHA_A + "\n")
    state = read_desired_state(deploy_repo.path, worktree=True)
    assert [str(p) for p in state.errors] == [
        "environments/staging/cart.deploy:1: app 'cart' has no entry under apps: in deployctl.yaml; "
        "add it (with its image) or remove this file"
    ]


def test_worktree_rejects_symlinks_nested_folders_and_submodules(deploy_repo: GitRepo) -> None:
    staging = deploy_repo.path / "environments/staging"
    os.symlink("web.deploy", staging / "api.deploy.tmp")
    (staging / "api.deploy").unlink()
    os.symlink("web.deploy", staging / "api.deploy")
    (staging / "eu").mkdir()
    (staging / "eu/web.deploy").write_text(SHA_A)
    (deploy_repo.path / "environments/production/worker.deploy").unlink()
    (deploy_repo.path / "environments/production/worker.deploy").mkdir()
    (deploy_repo.path / "environments/production/worker.deploy/.git").write_text("gitdir: ../x\n")
    errors = [str(p) for p in read_desired_state(deploy_repo.path, worktree=True).errors]
    only_files = "only regular files are allowed under environments/"
    assert errors == [
        f"environments/production/worker.deploy: is a submodule; {only_files}",
        f"environments/staging/api.deploy: is a symlink; {only_files}",
        f"environments/staging/api.deploy.tmp: is a symlink; {only_files}",
        "environments/staging/eu: is a nested folder; deploy files live at environments/<env>/<app>.deploy "
        "(move its files up or delete it)",
    ]


def test_worktree_file_name_that_is_not_utf8_is_reported_escaped(deploy_repo: GitRepo) -> None:
    staging = os.fsencode(deploy_repo.path / "environments/staging")
    with open(staging + b"/w\xffb.deploy", "wb") as f:
        f.write(SHA_A.encode())
    errors = [str(p) for p in read_desired_state(deploy_repo.path, worktree=True).errors]
    assert len(errors) == 1 and errors[0].startswith(
        "environments/staging/w\\xffb.deploy: app name 'w\\\\xffb'"
    )
    errors[0].encode("utf-8")  # printable: no lone surrogates reach the terminal


def test_tree_entry_name_that_is_not_utf8_is_reported_escaped(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"deployctl.yaml": CONFIG})
    r = repo.repo
    blob = r.create_blob(SHA_A.encode())
    # pygit2's TreeBuilder only takes str names, so write the raw tree object
    staging = r.odb.write(pygit2.enums.ObjectType.TREE, b"100644 w\xffb.deploy\x00" + blob.raw)
    envs = r.odb.write(pygit2.enums.ObjectType.TREE, b"40000 staging\x00" + staging.raw)
    root = r.TreeBuilder(r[repo.head].peel(pygit2.Commit).tree)
    root.insert("environments", envs, pygit2.GIT_FILEMODE_TREE)
    who = pygit2.Signature("a", "a@example.com", 0, 0)
    r.create_commit("refs/heads/main", who, who, "raw\n", root.write(), [pygit2.Oid(hex=repo.head)])
    errors = [str(p) for p in read_desired_state(repo.path).errors]
    assert len(errors) == 1 and errors[0].startswith("environments/staging/w\\xffb.deploy: app name")
    errors[0].encode("utf-8")


def test_worktree_of_a_bare_repo_is_a_clear_error(make_repo: MakeRepo) -> None:
    repo = make_repo("deploy.git", bare=True)
    repo.commit({"deployctl.yaml": CONFIG})
    with pytest.raises(RepoError, match="a bare repo has no work tree; use --ref instead of --worktree"):
        read_desired_state(repo.path, worktree=True)


def test_symlinks_and_submodules_in_a_commit_are_errors(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit(
        {
            "deployctl.yaml": CONFIG,
            "environments/staging/web.deploy": Symlink("../../secrets"),
            "environments/staging/api.deploy": Submodule(SHA_A),
        }
    )
    errors = [str(p) for p in read_desired_state(repo.path).errors]
    assert errors == [
        "environments/staging/api.deploy: is a submodule; only regular files are allowed under environments/",
        "environments/staging/web.deploy: is a symlink; only regular files are allowed under environments/",
    ]


def test_oversized_deploy_file_in_a_commit_is_an_error(make_repo: MakeRepo) -> None:
    repo = make_repo()
    repo.commit({"deployctl.yaml": CONFIG, "environments/staging/web.deploy": SHA_A + "\n" + "x" * 70_000})
    (problem,) = read_desired_state(repo.path).errors
    assert str(problem).startswith(
        "environments/staging/web.deploy:1: is 70041 bytes; deploy files are limited"
    )


def test_not_a_git_repo_is_a_repo_error(tmp_path: Path) -> None:
    with pytest.raises(RepoError, match="not a git repository"):
        read_desired_state(tmp_path)
    with pytest.raises(RepoError, match="no such directory"):
        read_desired_state(tmp_path / "missing")


def test_unknown_ref_is_a_repo_error(deploy_repo: GitRepo) -> None:
    with pytest.raises(RepoError, match="ref 'nope' does not resolve to a commit"):
        read_desired_state(deploy_repo.path, ref="nope")


def test_repo_without_commits_is_a_repo_error(make_repo: MakeRepo) -> None:
    repo = make_repo()
    with pytest.raises(RepoError, match="no commits yet"):
        read_desired_state(repo.path)


def test_repo_error_is_invalid_input() -> None:
    from deployctl.errors import InvalidInputError

    assert issubclass(RepoError, InvalidInputError) and RepoError.exit_code == 2


# --- source repos --------------------------------------------------------------------------------


def source_setup(make_repo: MakeRepo) -> tuple[GitRepo, GitRepo, str]:
    source = make_repo("web")
    app_commit = source.commit({"main.py": b"print('hi')\n"}, message="First")
    deploy = make_repo("deploy")
    config = CONFIG.replace(b"{image: r.example.com/web}", b"{image: r.example.com/web, source: ../web}")
    deploy.commit({"deployctl.yaml": config})
    return source, deploy, app_commit


def test_sha_that_is_a_commit_in_the_source_repo_passes(make_repo: MakeRepo) -> None:
    _, deploy, app_commit = source_setup(make_repo)
    deploy.commit({"environments/staging/web.deploy": app_commit + "\n"})
    state = read_desired_state(deploy.path)
    assert state.ok and state.targets[0].sha == app_commit


def test_sha_missing_from_the_source_repo_is_an_error(make_repo: MakeRepo) -> None:
    _, deploy, _ = source_setup(make_repo)
    deploy.commit({"environments/staging/web.deploy": SHA_A + "\n"})
    state = read_desired_state(deploy.path)
    assert [str(p) for p in state.errors] == [
        f"environments/staging/web.deploy:1: commit {SHA_A} is not in ../web (the app's source repo); "
        "push it there, or fetch, or fix the SHA"
    ]
    assert state.targets == () and state.invalid() == {("staging", "web")}


def test_sha_of_a_tree_or_tag_in_the_source_repo_is_an_error(make_repo: MakeRepo) -> None:
    source, deploy, app_commit = source_setup(make_repo)
    tree = str(source.repo[app_commit].peel(pygit2.Commit).tree_id)
    who = pygit2.Signature("T", "t@example.com", 0, 0)
    tag = str(
        source.repo.create_tag("v1", pygit2.Oid(hex=app_commit), pygit2.enums.ObjectType.COMMIT, who, "v1")
    )
    deploy.commit({"environments/staging/web.deploy": tree + "\n", "environments/staging/x.txt": b""})
    assert "is a tree in ../web, not a commit" in str(read_desired_state(deploy.path).errors[0])
    deploy.commit({"environments/staging/web.deploy": tag + "\n"})
    message = str(read_desired_state(deploy.path).errors[0])
    assert (
        f"is an annotated tag in ../web, not a commit; write the commit it points to: {app_commit}" in message
    )


def test_source_that_is_not_on_this_disk_is_not_checked(make_repo: MakeRepo) -> None:
    deploy = make_repo("deploy")
    config = CONFIG.replace(
        b"{image: r.example.com/web}",
        b"{image: r.example.com/web, source: 'https://git.example.com/web.git'}",
    )
    deploy.commit({"deployctl.yaml": config, "environments/staging/web.deploy": SHA_A})
    assert read_desired_state(deploy.path).ok
    deploy.commit({"deployctl.yaml": config.replace(b"https://git.example.com/web.git", b"../nowhere")})
    assert read_desired_state(deploy.path).ok


# --- commits and history --------------------------------------------------------------------------


def test_commit_info_reads_authors_times_message_and_reviewers(make_repo: MakeRepo) -> None:
    repo = make_repo()
    first = repo.commit({"a": b"1"}, message="Start")
    when = datetime(2024, 6, 4, 12, 30, tzinfo=UTC)
    sha = repo.commit(
        {"a": b"2"},
        message="Deploy web to production\n\nShips the search fix.",
        author=("Ann Author", "ann@example.com"),
        committer=("Cody Committer", "cody@example.com"),
        time=when,
        trailers=[
            "Reviewed-by: Rita <rita@example.com>",
            "Approved-by: @shop/release-managers",
            "Signed-off-by: A",
        ],
    )
    info = commit_info(repo.path, "HEAD")
    assert info == CommitInfo(
        sha=sha,
        author_name="Ann Author",
        author_email="ann@example.com",
        committer_name="Cody Committer",
        committer_email="cody@example.com",
        time=when,
        summary="Deploy web to production",
        message="Deploy web to production\n\nShips the search fix.\n\nReviewed-by: Rita <rita@example.com>\n"
        "Approved-by: @shop/release-managers\nSigned-off-by: A\n",
        reviewers=("Rita <rita@example.com>", "@shop/release-managers"),
        parents=(first,),
    )
    assert commit_info(repo.path, first).reviewers == ()


def test_commit_info_of_unknown_rev_is_a_repo_error(deploy_repo: GitRepo) -> None:
    with pytest.raises(RepoError):
        commit_info(deploy_repo.path, "0" * 40)


def test_last_change_is_the_newest_commit_that_touched_the_file(make_repo: MakeRepo) -> None:
    repo = make_repo()
    web = "environments/staging/web.deploy"
    c1 = repo.commit({web: SHA_A, "environments/staging/api.deploy": SHA_A}, message="one")
    c2 = repo.commit({web: SHA_B}, message="two")
    c3 = repo.commit({"environments/staging/api.deploy": SHA_B}, message="three")
    info = last_change(repo.path, web)
    assert info is not None and info.sha == c2
    api = last_change(repo.path, "environments/staging/api.deploy")
    assert api is not None and api.sha == c3
    first = last_change(repo.path, web, ref=c1)
    assert first is not None and first.sha == c1
    assert last_change(repo.path, "environments/staging/none.deploy") is None
    c4 = repo.commit({web: None}, message="remove web")
    deleted = last_change(repo.path, web)
    assert deleted is not None and deleted.sha == c4


def test_last_change_skips_a_merge_that_kept_one_side(make_repo: MakeRepo) -> None:
    repo = make_repo()
    web = "environments/staging/web.deploy"
    base = repo.commit({web: SHA_A, "other": b"0"})
    changed = repo.commit({web: SHA_B}, branch="feature", parents=[base])
    side = repo.commit({"other": b"1"}, parents=[base])
    merge = repo.commit({web: SHA_B, "other": b"1"}, parents=[side, changed], message="Merge feature")
    assert repo.head == merge
    info = last_change(repo.path, web)
    assert info is not None and info.sha == changed


def test_read_file_at_returns_bytes_at_a_ref(make_repo: MakeRepo) -> None:
    repo = make_repo()
    first = repo.commit({"environments/staging/web.deploy": SHA_A})
    repo.commit({"environments/staging/web.deploy": SHA_B})
    assert read_file_at(repo.path, "environments/staging/web.deploy", ref=first) == SHA_A.encode()
    assert read_file_at(repo.path, "environments/staging/web.deploy") == SHA_B.encode()
    assert read_file_at(repo.path, "environments/staging") is None
