"""The deploy repo edge: reads the desired state, commits and file history with pygit2.

Reads straight from a commit's tree (bare or non-bare repos, no checkout), or from the work
tree with ``worktree=True``. All the rules live in :mod:`deployctl.rules.validation`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import pygit2
import structlog

from deployctl import settings
from deployctl.edges.git.tree import one_line, read_tree, read_worktree
from deployctl.errors import InvalidInputError
from deployctl.model.config import Config, show
from deployctl.model.limits import ReadLimits
from deployctl.model.problem import ERROR, WARNING, Problem
from deployctl.model.state import DesiredState
from deployctl.rules.validation import build_desired_state, drop_targets

log = structlog.get_logger(__name__)

_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/\s]+@[^/\s]+:")


class RepoError(InvalidInputError):
    """The deploy repo cannot be opened, or a ref or commit does not resolve in it."""


def open_repository(repo: str | Path) -> pygit2.Repository:
    """Open a bare or non-bare git repository, or raise RepoError saying why not."""
    if isinstance(repo, pygit2.Repository):
        return repo
    path = Path(repo)
    if not path.exists():
        raise RepoError(f"{path}: no such directory; pass --repo with the deploy repo's path")
    try:
        return pygit2.Repository(str(path))
    except (pygit2.GitError, KeyError, ValueError) as exc:
        raise RepoError(
            f"{path}: not a git repository ({one_line(exc)}); pass --repo with a git repo"
        ) from exc


def resolve_commit(repository: pygit2.Repository, ref: str) -> pygit2.Commit:
    """The commit a ref (branch, tag, SHA, HEAD, HEAD~2, ...) names, or RepoError."""
    where = repository.workdir or repository.path
    if repository.head_is_unborn and ref in ("HEAD", "@"):
        raise RepoError(
            f"{where}: the repo has no commits yet; commit deployctl.yaml and environments/ first"
        )
    try:
        obj = repository.revparse_single(ref)
        commit = obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError) as exc:
        raise RepoError(f"{where}: ref {show(ref)} does not resolve to a commit ({one_line(exc)})") from exc
    assert isinstance(commit, pygit2.Commit)
    return commit


def repo_root(repository: pygit2.Repository) -> Path:
    """The folder relative paths in deployctl.yaml start from: the work tree, or the bare repo itself."""
    return Path(repository.workdir or repository.path)


def read_desired_state(
    repo: str | Path,
    *,
    ref: str = "HEAD",
    worktree: bool = False,
    limits: ReadLimits | None = None,
    source_roots: Sequence[Path] | None = None,
) -> DesiredState:
    """Read and validate the desired state at ``ref`` (or in the work tree).

    Raises RepoError when ``repo`` is not a git repo or ``ref`` does not resolve; everything
    wrong inside the repo is reported in ``DesiredState.problems``. No file over ``limits``
    (default: :meth:`ReadLimits.from_env`) is read: its size comes from the object header. App
    ``source`` repos are opened only inside ``source_roots`` (default: :func:`default_source_roots`).
    """
    limits = limits or ReadLimits.from_env()
    repository = open_repository(repo)
    if worktree:
        if repository.is_bare or not repository.workdir:
            raise RepoError(
                f"{repository.path}: a bare repo has no work tree; use --ref instead of --worktree"
            )
        root = Path(repository.workdir)
        config, entries = read_worktree(root, limits)
        state = build_desired_state(config, entries, ref="worktree", commit=None, limits=limits)
    else:
        commit = resolve_commit(repository, ref)
        config, entries, tree_problems = read_tree(repository, commit.tree, limits)
        state = build_desired_state(config, entries, ref=ref, commit=str(commit.id), limits=limits)
        state = drop_targets(state, tree_problems)
    root = repo_root(repository)
    state = check_sources(state, root, source_roots if source_roots is not None else default_source_roots(root))
    log.debug(
        "desired_state.read",
        ref=state.ref,
        commit=state.commit,
        targets=len(state.targets),
        problems=len(state.problems),
    )
    return state


def default_source_roots(deploy_root: Path, environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The folders app ``source`` repos may be opened in, after symlinks: ``$DEPLOYCTL_SOURCE_ROOTS``
    (separated by ``os.pathsep``), else the deploy repo's parent folder. A setting of the runner, never
    repo content."""
    value = settings.SOURCE_ROOTS.get(environ)
    if value:
        return tuple(Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip())
    return (deploy_root.resolve().parent,)


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _locate_source(root: Path, source: str, roots: Sequence[Path]) -> tuple[Path | None, bool]:
    """(the resolved path of a ``source`` when it is a path inside a root and exists, whether it was
    refused for resolving outside every root). Nothing is opened; a URL is neither."""
    if _REMOTE.match(source):
        return None, False
    try:
        path = (root / source).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop; a NUL the loader already reports
        return None, True
    if not _inside(path, roots):
        return None, True
    return (path if path.exists() else None), False


def _roots_text(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots) or "none"


def check_sources(state: DesiredState, root: Path, roots: Sequence[Path]) -> DesiredState:
    """Check each app's ``source`` path lies inside ``roots`` (after symlinks) and each target's SHA is a
    commit in its app's ``source`` repo, when that repo is on this disk. A source outside every root is an
    error on its line in deployctl.yaml, its targets are dropped, and it is never opened."""
    config = state.config
    if config is None:
        return state
    added: list[Problem] = []
    located: dict[str, Path | None] = {}
    refused: dict[str, int | None] = {}  # app -> line of its refused source
    for name, app_config in sorted(config.apps.items()):
        if not app_config.source:
            continue
        path, outside = _locate_source(root, app_config.source, roots)
        located[name] = path
        if outside:
            line = config.lines.get(f"apps.{name}.source") or config.lines.get(f"apps.{name}")
            refused[name] = line
            added.append(Problem(
                config.path, line,
                f"apps.{name}.source {show(app_config.source)} does not resolve inside the folders app repos may "
                f"be read from ({_roots_text(roots)}); it was not opened. Move the app repo into one of them, or have the "
                "runner's operator add its folder to DEPLOYCTL_SOURCE_ROOTS",
                ERROR, app=name,
            ))
            log.warning("source.refused", app=name, source=app_config.source, roots=[str(r) for r in roots])
    opened: dict[str, pygit2.Repository | None] = {}
    for target in state.targets:
        app = config.apps.get(target.app)
        if app is None or not app.source:
            continue
        if target.app in refused:
            where = config.path if refused[target.app] is None else f"{config.path}:{refused[target.app]}"
            added.append(Problem(
                target.path, target.line,
                f"not deployable: apps.{target.app}.source is not inside the allowed folders ({where})",
                ERROR, env=target.env, app=target.app,
            ))
            continue
        if target.app not in opened:
            path = located.get(target.app)
            source_repo = None
            if path is not None:
                try:
                    source_repo = pygit2.Repository(str(path))
                except (pygit2.GitError, KeyError, ValueError):
                    added.append(
                        Problem(
                            config.path,
                            config.lines.get(f"apps.{target.app}"),
                            f"apps.{target.app}.source {show(app.source)} is not a git repo; "
                            "SHAs were not checked against it",
                            WARNING,
                        )
                    )
            else:
                log.debug("source.unavailable", app=target.app, source=app.source)
            opened[target.app] = source_repo
        source_repo = opened[target.app]
        if source_repo is None:
            continue
        message = _commit_problem(source_repo, target.sha, app.source)
        if message is not None:
            added.append(Problem(target.path, target.line, message, ERROR, env=target.env, app=target.app))
    return drop_targets(state, added)


def _commit_problem(source_repo: pygit2.Repository, sha: str, source: str) -> str | None:
    try:
        obj = source_repo.get(sha)
    except (ValueError, pygit2.GitError):
        obj = None
    if obj is None:
        return (
            f"commit {sha} is not in {source} (the app's source repo); push it there, "
            "or fetch, or fix the SHA"
        )
    if obj.type == pygit2.GIT_OBJECT_COMMIT:
        return None
    if obj.type == pygit2.GIT_OBJECT_TAG:
        target = obj.peel(pygit2.Commit).id
        return f"{sha} is an annotated tag in {source}, not a commit; write the commit it points to: {target}"
    kind = {pygit2.GIT_OBJECT_TREE: "tree", pygit2.GIT_OBJECT_BLOB: "file (blob)"}.get(obj.type, "object")
    return f"{sha} is a {kind} in {source}, not a commit; write a commit SHA (git log)"


# --- commits and history ------------------------------------------------------------------------


# --- the review workflow: file history, commit ranges, approvals, promote writes -----------------


def source_repo_path(root: Path, source: str, roots: Sequence[Path] | None = None) -> Path | None:
    """The local path of an app's ``source`` repo (relative to the deploy repo root ``root``); None if it
    is a URL, absent, or outside ``roots`` (default: :func:`default_source_roots`)."""
    return _locate_source(root, source, default_source_roots(root) if roots is None else roots)[0]


def local_sources(
    repo: str | Path, config: Config | None, roots: Sequence[Path] | None = None
) -> dict[str, Path]:
    """app -> its ``source`` repo on this disk, for the apps that have one inside ``roots``."""
    if config is None:
        return {}
    root = repo_root(open_repository(repo))
    found = {name: source_repo_path(root, app.source, roots) for name, app in config.apps.items() if app.source}
    return {name: path for name, path in found.items() if path is not None}


def identity(repo: str | Path) -> tuple[str, str]:
    """Who is acting: git's user.name/user.email, else $USER at this host."""
    return _identity(open_repository(repo))


def _identity(repository: pygit2.Repository) -> tuple[str, str]:
    try:
        sig = repository.default_signature
        return str(sig.name), str(sig.email)
    except (KeyError, pygit2.GitError):
        user = os.environ.get("USER") or "deployctl"
        return user, f"{user}@{socket.gethostname()}"


def write_worktree_files(repo: str | Path, files: Mapping[str, bytes]) -> None:
    """Write ``{repo-relative path: bytes}`` into the work tree (never outside it)."""
    repository = open_repository(repo)
    if repository.is_bare or not repository.workdir:
        raise RepoError(f"{repository.path}: a bare repo has no work tree to write to; clone it first")
    root = Path(repository.workdir).resolve()
    for rel, data in files.items():
        dest = (root / rel).resolve()
        if root not in dest.parents:
            raise RepoError(f"{rel}: outside the work tree {root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def commit_files(repo: str | Path, files: Mapping[str, bytes], *, message: str) -> str:
    """Commit exactly ``files`` on top of HEAD's branch (other staged or unstaged changes stay out) and
    update the index for them. Returns the new commit SHA."""
    repository = open_repository(repo)
    if repository.head_is_unborn or repository.head_is_detached:
        raise RepoError(
            f"{repository.workdir or repository.path}: HEAD is not on a branch with commits; "
            "check out a branch"
        )
    head = repository.head.peel(pygit2.Commit)
    tree_id = _tree_with(repository, head.tree, files)
    name, email = _identity(repository)
    sig = pygit2.Signature(name, email)
    oid = repository.create_commit(repository.head.name, sig, sig, message, tree_id, [head.id])
    if not repository.is_bare:
        index = repository.index
        index.read()
        for rel, data in files.items():
            index.add(pygit2.IndexEntry(rel, repository.create_blob(data), pygit2.enums.FileMode.BLOB))
        index.write()
    log.info("repo.committed", sha=str(oid), files=sorted(files))
    return str(oid)


def _tree_with(
    repository: pygit2.Repository, base: pygit2.Tree | None, files: Mapping[str, bytes]
) -> pygit2.Oid:
    builder = repository.TreeBuilder(base) if base is not None else repository.TreeBuilder()
    here: dict[str, bytes] = {}
    below: dict[str, dict[str, bytes]] = {}
    for rel, data in files.items():
        first, _, rest = rel.partition("/")
        if rest:
            below.setdefault(first, {})[rest] = data
        else:
            here[first] = data
    for name, data in here.items():
        builder.insert(name, repository.create_blob(data), pygit2.GIT_FILEMODE_BLOB)
    for name, sub in below.items():
        existing = builder.get(name)
        sub_base = None
        if existing is not None and existing.filemode == pygit2.GIT_FILEMODE_TREE:
            sub_base = repository[existing.id].peel(pygit2.Tree)
        builder.insert(name, _tree_with(repository, sub_base, sub), pygit2.GIT_FILEMODE_TREE)
    return builder.write()


def reference_names(repo: str | Path) -> list[str]:
    """Branch, remote-branch and tag names (short forms, e.g. ``main``, ``origin/main``, ``v1``), for completion."""
    repository = open_repository(repo)
    names = ["HEAD"]
    for full in repository.references:
        for prefix in ("refs/heads/", "refs/remotes/", "refs/tags/"):
            if full.startswith(prefix):
                names.append(full[len(prefix) :])
    return sorted(set(names))


def ensure_repository(path: str | Path) -> bool:
    """Make ``path`` a git repository (with a work tree) unless it is one; True when one was created."""
    try:
        open_repository(path)
        return False
    except RepoError:
        pygit2.init_repository(str(path), bare=False, initial_head="main")
        return True


def commit_on_branch(repo: str | Path, files: Mapping[str, bytes], *, message: str, branch: str,
                     base: str = "HEAD") -> str:
    """Commit ``files`` on top of ``base`` as ``refs/heads/<branch>`` (moved there even when it exists),
    leaving HEAD, the index and the work tree alone. Returns the new commit SHA."""
    repository = open_repository(repo)
    parent = resolve_commit(repository, base)
    tree_id = _tree_with(repository, parent.tree, files)
    name, email = _identity(repository)
    sig = pygit2.Signature(name, email)
    oid = repository.create_commit(None, sig, sig, message, tree_id, [parent.id])
    repository.references.create(f"refs/heads/{branch}", oid, force=True)
    log.info("repo.committed", sha=str(oid), branch=branch, files=sorted(files))
    return str(oid)


def current_branch(repo: str | Path) -> str:
    """The short name of the branch HEAD is on."""
    repository = open_repository(repo)
    if repository.head_is_unborn or repository.head_is_detached:
        raise RepoError(f"{repository.workdir or repository.path}: HEAD is not on a branch with commits")
    return str(repository.head.shorthand)


def remote_url(repo: str | Path, remote: str = "origin") -> str:
    repository = open_repository(repo)
    try:
        url = repository.remotes[remote].url
    except (KeyError, ValueError) as exc:
        raise RepoError(f"{repository.workdir or repository.path}: no remote {remote!r} to push to") from exc
    return str(url or "")


class _PushCredentials(pygit2.RemoteCallbacks):
    def __init__(self, username: str, token: str) -> None:
        super().__init__()
        self._pair = (username, token)
        self.rejected: str | None = None

    def credentials(self, url: str, username_from_url: str | None, allowed_types: object) -> pygit2.UserPass:
        return pygit2.UserPass(*self._pair)

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected = f"{refname}: {message}"


def push_branch(repo: str | Path, branch: str, *, username: str, token: str, remote: str = "origin") -> None:
    """Force-push ``branch`` to ``remote`` with ``token`` as the password. The caller checks that the
    remote is on the host the token belongs to."""
    repository = open_repository(repo)
    callbacks = _PushCredentials(username, token)
    try:
        repository.remotes[remote].push([f"+refs/heads/{branch}:refs/heads/{branch}"], callbacks=callbacks)
    except pygit2.GitError as exc:
        raise RepoError(f"push of {branch} to {remote} failed: {exc}") from exc
    if callbacks.rejected:
        raise RepoError(f"the remote refused the push: {callbacks.rejected}")
    log.info("repo.pushed", branch=branch, remote=remote)
