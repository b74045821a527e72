"""An app's `source:` is repo content: its path is opened only inside the runner's source roots
(DEPLOYCTL_SOURCE_ROOTS, default the deploy repo's parent folder), after symlinks. Outside them it is a
validation error naming deployctl.yaml, the line and the roots, and the repo is never opened: not by
validate, diff (the PR comment), the audit record's app commit, nor the dashboard's app page.

Real git repos made with pygit2: the deploy repo and `web` side by side in the test's folder, and
"another project" in a folder of its own beside it, as another checkout on a shared runner would be.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.git.repo import local_sources, read_desired_state
from deployctl.model.config import show
from deployctl.ui.apppage import app_page
from deployctl.ui.data import Dashboard, RepoView
from tests.fixtures.auditdata import make_attempt
from tests.fixtures.gitrepo import GitRepo, Symlink

pytestmark = pytest.mark.integration

MakeRepo = Callable[..., GitRepo]
SECRET_SUBJECT = "Payroll: rotate the bank API key"
CONFIG = """version: 1
apps:
  web:
    image: registry.example.com/shop/web
    source: {source}
environments:
  staging:
    namespace: shop-staging
"""
SOURCE_LINE = 5


@pytest.fixture(autouse=True)
def default_roots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOYCTL_SOURCE_ROOTS", raising=False)


@pytest.fixture
def other(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    """Another project's checkout on the same disk, outside the deploy repo's parent folder."""
    import pygit2

    path = tmp_path_factory.mktemp("elsewhere") / "payroll"
    repo = GitRepo(pygit2.init_repository(str(path), initial_head="main"), path)
    repo.commit({"pay.py": "1"}, message="Payroll: first", author=("Pat Payroll", "pat@corp.example"))
    repo.commit({"pay.py": "2"}, message=SECRET_SUBJECT, author=("Pat Payroll", "pat@corp.example"))
    return repo


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def shas(repo: GitRepo) -> list[str]:
    import pygit2

    return [str(c.id) for c in repo.repo.walk(repo.repo.head.target, pygit2.enums.SortMode.REVERSE)]


def deploy_with(make_repo: MakeRepo, source: str, first: str, second: str | None = None) -> GitRepo:
    """A deploy repo whose web app names ``source``; web at ``first`` (then, in a second commit, ``second``)."""
    deploy = make_repo("deploy")
    deploy.commit({"deployctl.yaml": CONFIG.format(source=source),
                   "environments/staging/web.deploy": f"{first}\n"}, message="web first")
    if second is not None:
        deploy.commit({"environments/staging/web.deploy": f"{second}\n"}, message="web second")
    return deploy


def refusal(source: str, roots: str) -> str:
    # quoted and cut as every config value in a message (the temp path's length varies with --basetemp)
    return (f"deployctl.yaml:{SOURCE_LINE}: apps.web.source {show(source)} does not resolve inside the folders app repos "
            f"may be read from ({roots}); it was not opened. Move the app repo into one of them, or have the runner's "
            "operator add its folder to DEPLOYCTL_SOURCE_ROOTS")


def test_an_absolute_source_outside_the_roots_is_refused_by_validate_naming_file_line_and_roots(
        make_repo: MakeRepo, other: GitRepo, tmp_path: Path) -> None:
    first, second = shas(other)
    deploy = deploy_with(make_repo, str(other.path), second)
    code, out = run("validate", "--repo", str(deploy.path), "--no-gates")
    assert code == 1, out
    lines = out.splitlines()
    assert refusal(str(other.path), str(tmp_path.resolve())) in lines
    assert ("environments/staging/web.deploy:1: not deployable: apps.web.source is not inside the allowed folders "
            f"(deployctl.yaml:{SOURCE_LINE})") in lines
    # not an oracle for "does commit X exist in repo Y": a SHA that is not there reads the same
    deploy.commit({"environments/staging/web.deploy": f"{'0' * 40}\n"}, message="a SHA the other repo lacks")
    again = run("validate", "--repo", str(deploy.path), "--no-gates")
    assert (again[0], again[1].splitlines()[:-1]) == (code, lines[:-1])  # the last line names the commit


def test_diff_never_lists_the_commits_of_a_source_outside_the_roots(make_repo: MakeRepo, other: GitRepo) -> None:
    first, second = shas(other)
    deploy = deploy_with(make_repo, str(other.path), first, second)
    for fmt in ("markdown", "json", "text"):
        code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", str(deploy.path), "-o", fmt)
        assert code == 1, out  # the head has an error
        assert "does not resolve inside the folders app repos may be read from" in out
        assert SECRET_SUBJECT not in out and "Pat Payroll" not in out, out


def test_dotdot_escaping_the_roots_is_refused(make_repo: MakeRepo, other: GitRepo, tmp_path: Path) -> None:
    first, second = shas(other)
    escape = "../" * len(tmp_path.resolve().parts) + str(other.path.resolve()).lstrip("/")
    deploy = deploy_with(make_repo, escape, first, second)
    state = read_desired_state(deploy.path)
    assert [str(p) for p in state.errors][0] == refusal(escape, str(tmp_path.resolve()))
    assert state.targets == ()
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", str(deploy.path), "-o", "markdown")
    assert code == 1 and SECRET_SUBJECT not in out


def test_a_symlink_in_the_deploy_repo_pointing_outside_is_refused(
        make_repo: MakeRepo, other: GitRepo, tmp_path: Path) -> None:
    first, second = shas(other)
    deploy = deploy_with(make_repo, "vendor/web", first)
    deploy.commit({"vendor/web": Symlink(str(other.path)), "environments/staging/web.deploy": f"{second}\n"},
                  message="vendor the web app")
    assert (deploy.path / "vendor" / "web").is_symlink()
    state = read_desired_state(deploy.path, worktree=True)
    assert [str(p) for p in state.errors][0] == refusal("vendor/web", str(tmp_path.resolve()))
    assert local_sources(deploy.path, state.config) == {}
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", str(deploy.path), "-o", "markdown")
    assert code == 1 and SECRET_SUBJECT not in out


def test_dotdot_web_beside_the_checkout_still_works(make_repo: MakeRepo) -> None:
    web = make_repo("web")
    w1 = web.commit({"app.py": "1"}, message="Web: first")
    w2 = web.commit({"app.py": "2"}, message="Search: fix paging", author=("Bo", "bo@x.io"))
    deploy = deploy_with(make_repo, "../web", w1, w2)
    code, out = run("validate", "--repo", str(deploy.path), "--no-gates")
    assert code == 0 and out.startswith("ok: 1 target in 1 environment"), out
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", str(deploy.path), "-o", "markdown")
    assert code == 0 and f"- `{w2[:12]}` Search: fix paging (Bo)" in out.splitlines()
    assert local_sources(deploy.path, read_desired_state(deploy.path).config) == {"web": web.path.resolve()}
    # `..` that stays inside the root is fine too
    deploy.commit({"deployctl.yaml": CONFIG.format(source="../deploy/../web")}, message="roundabout")
    assert read_desired_state(deploy.path).ok


def test_a_root_in_DEPLOYCTL_SOURCE_ROOTS_allows_a_path_inside_it_and_replaces_the_default(
        make_repo: MakeRepo, other: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = shas(other)
    deploy = deploy_with(make_repo, str(other.path), first, second)
    monkeypatch.setenv("DEPLOYCTL_SOURCE_ROOTS", f"/nonexistent/apps{os.pathsep}{other.path.parent}")
    code, out = run("diff", "--base", "main~1", "--head", "main", "--repo", str(deploy.path), "-o", "json")
    assert code == 0, out
    [target] = json.loads(out)["targets"]
    assert [c["summary"] for c in target["commits"]["commits"]] == [SECRET_SUBJECT]
    assert local_sources(deploy.path, read_desired_state(deploy.path).config) == {"web": other.path.resolve()}

    web = make_repo("web")  # beside the checkout, but the runner named other roots
    w1 = web.commit({"app.py": "1"}, message="Web: first")
    deploy.commit({"deployctl.yaml": CONFIG.format(source="../web"), "environments/staging/web.deploy": w1})
    code, out = run("validate", "--repo", str(deploy.path), "--no-gates")
    assert code == 1
    assert refusal("../web", f"/nonexistent/apps, {other.path.parent.resolve()}") in out.splitlines()


def test_the_dashboard_and_the_audit_record_never_open_a_source_outside_the_roots(
        make_repo: MakeRepo, other: GitRepo, tmp_path: Path) -> None:
    first, second = shas(other)
    deploy = deploy_with(make_repo, str(other.path), second)
    state = read_desired_state(deploy.path)
    assert local_sources(deploy.path, state.config) == {}  # what the reconcile's audit recorder reads from
    audit = f"sqlite:///{tmp_path}/audit.db"
    store = open_store(audit)
    try:
        store.start(make_attempt(env="staging", app="web", namespace="shop-staging", previous_sha=first,
                                 new_sha=second, app_commit_summary=None))
        dashboard = Dashboard(RepoView(deploy.path), store=store, clusters=None)
        page = app_page(dashboard, "web")
    finally:
        store.close()
    assert page is not None and len(page.history) == 1
    assert page.history[0].commits is None
    assert SECRET_SUBJECT not in json.dumps(page.as_dict())


def test_a_bare_mirror_reads_sources_beside_it_and_refuses_others(make_repo: MakeRepo, other: GitRepo,
                                                                  tmp_path: Path) -> None:
    """The controller reads its bare mirror: the same rule, with the mirror's parent folder as the root."""
    web = make_repo("web")
    w1 = web.commit({"app.py": "1"}, message="Web: first")
    mirror = make_repo("mirror.git", bare=True)
    mirror.commit({"deployctl.yaml": CONFIG.format(source="../web"), "environments/staging/web.deploy": "0" * 40})
    assert "is not in ../web" in str(read_desired_state(mirror.path).errors[0])
    mirror.commit({"environments/staging/web.deploy": w1})
    assert read_desired_state(mirror.path).ok
    mirror.commit({"deployctl.yaml": CONFIG.format(source=str(other.path)),
                   "environments/staging/web.deploy": shas(other)[1]})
    assert str(read_desired_state(mirror.path).errors[0]) == refusal(str(other.path), str(tmp_path.resolve()))


def test_a_symlink_loop_as_source_is_an_error_not_a_traceback(make_repo: MakeRepo, tmp_path: Path) -> None:
    deploy = deploy_with(make_repo, "vendor/web", "1" * 40)
    deploy.commit({"vendor/web": Symlink("web")}, message="a link to itself")
    state = read_desired_state(deploy.path)
    assert [str(p) for p in state.errors][0] == refusal("vendor/web", str(tmp_path.resolve()))
    code, out = run("validate", "--repo", str(deploy.path), "--no-gates")
    assert code == 1 and refusal("vendor/web", str(tmp_path.resolve())) in out.splitlines()
