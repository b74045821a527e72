"""The deploy repo edge: reads the desired state, commits and file history with pygit2.

Reads straight from a commit's tree (bare or non-bare repos, no checkout), or from the work
tree with ``worktree=True``. All the rules live in :mod:`deployctl.rules.validation`.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2
import structlog

from deployctl.edges.git.tree import MODE_KIND, one_line, read_tree, read_worktree
from deployctl.errors import InvalidInputError
from deployctl.model.config import Config, show
from deployctl.model.limits import ReadLimits
from deployctl.model.problem import ERROR, WARNING, Problem
from deployctl.model.state import DesiredState
from deployctl.rules.deployfile import parse_deploy_file, quick_sha
from deployctl.rules.ordering import Relation
from deployctl.rules.validation import FILE, build_desired_state, drop_targets

log = structlog.get_logger(__name__)

_TRAILER = re.compile(r"^(Reviewed-by|Approved-by):\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/\s]+@[^/\s]+:")


class RepoError(InvalidInputError):
    """The deploy repo cannot be opened, or a ref or commit does not resolve in it."""


@dataclass(frozen=True)
class CommitInfo:
    """A commit as shown to people: who, when (UTC, committer time), what, and who reviewed it."""

    sha: str
    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    time: datetime  # UTC, committer time
    summary: str  # first line of the message
    message: str
    reviewers: tuple[str, ...]  # from Reviewed-by:/Approved-by: trailers
    parents: tuple[str, ...]


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
    repo: str | Path, *, ref: str = "HEAD", worktree: bool = False, limits: ReadLimits | None = None
) -> DesiredState:
    """Read and validate the desired state at ``ref`` (or in the work tree).

    Raises RepoError when ``repo`` is not a git repo or ``ref`` does not resolve; everything
    wrong inside the repo is reported in ``DesiredState.problems``. No file over ``limits``
    (default: :meth:`ReadLimits.from_env`) is read: its size comes from the object header.
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
    state = check_sources(state, repo_root(repository))
    log.debug(
        "desired_state.read",
        ref=state.ref,
        commit=state.commit,
        targets=len(state.targets),
        problems=len(state.problems),
    )
    return state


def _local_source(root: Path, source: str) -> Path | None:
    if _REMOTE.match(source):
        return None
    path = (root / source).resolve()
    return path if path.exists() else None


def check_sources(state: DesiredState, root: Path) -> DesiredState:
    """Check each target's SHA is a commit in its app's ``source`` repo, when that repo is on this disk."""
    if state.config is None:
        return state
    added: list[Problem] = []
    opened: dict[str, pygit2.Repository | None] = {}
    for target in state.targets:
        app = state.config.apps.get(target.app)
        if app is None or not app.source:
            continue
        if app.source not in opened:
            path = _local_source(root, app.source)
            source_repo = None
            if path is not None:
                try:
                    source_repo = pygit2.Repository(str(path))
                except (pygit2.GitError, KeyError, ValueError):
                    added.append(
                        Problem(
                            state.config.path,
                            state.config.lines.get(f"apps.{target.app}"),
                            f"apps.{target.app}.source {show(app.source)} is not a git repo; "
                            "SHAs were not checked against it",
                            WARNING,
                        )
                    )
            else:
                log.debug("source.unavailable", app=target.app, source=app.source)
            opened[app.source] = source_repo
        source_repo = opened[app.source]
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


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _reviewers(message: str) -> tuple[str, ...]:
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return ()
    return tuple(dict.fromkeys(m.group(2) for m in _TRAILER.finditer(paragraphs[-1])))


def _commit_info(commit: pygit2.Commit) -> CommitInfo:
    message = commit.message or ""
    return CommitInfo(
        sha=str(commit.id),
        author_name=commit.author.name,
        author_email=commit.author.email,
        committer_name=commit.committer.name,
        committer_email=commit.committer.email,
        time=_utc(commit.commit_time),
        summary=message.split("\n", 1)[0].strip(),
        message=message,
        reviewers=_reviewers(message),
        parents=tuple(str(p) for p in commit.parent_ids),
    )


def commit_info(repo: str | Path, rev: str) -> CommitInfo:
    """Who made a commit, when, its message and reviewers. Raises RepoError if ``rev`` does not resolve."""
    return _commit_info(resolve_commit(open_repository(repo), rev))


def _entry_id(tree: pygit2.Tree, path: str) -> tuple[str, int] | None:
    try:
        obj = tree[path]
    except (KeyError, pygit2.GitError):  # GitError: a tree on the way that git cannot parse
        return None
    return (str(obj.id), int(obj.filemode))


def last_change(repo: str | Path, path: str, *, ref: str = "HEAD") -> CommitInfo | None:
    """The newest commit reachable from ``ref`` that changed (added, edited or deleted) ``path``."""
    repository = open_repository(repo)
    start = resolve_commit(repository, ref)
    walker = repository.walk(start.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    for commit in walker:
        mine = _entry_id(commit.tree, path)
        parents = commit.parents
        if not parents:
            if mine is not None:
                return _commit_info(commit)
            continue
        # like git log's history simplification: a merge that kept one parent's version did not change it
        if all(_entry_id(p.tree, path) != mine for p in parents):
            return _commit_info(commit)
    return None


def read_file_at(repo: str | Path, path: str, *, ref: str = "HEAD", max_bytes: int | None = None) -> bytes | None:
    """A file's bytes at ``ref``, or None if it is not a regular file there. A file over ``max_bytes``
    (default: the deployctl.yaml limit of :class:`ReadLimits`) is a RepoError naming it, never read."""
    limit = max_bytes if max_bytes is not None else ReadLimits.from_env().config_bytes
    repository = open_repository(repo)
    tree = resolve_commit(repository, ref).tree
    try:
        obj: Any = tree[path]
    except (KeyError, pygit2.GitError):
        return None
    if MODE_KIND.get(obj.filemode) != FILE:
        return None
    _, size = repository.odb.read_header(obj.id)
    if size > limit:
        raise RepoError(f"{path} at {show(ref)}: is {size} bytes; the limit is {limit} bytes")
    return bytes(obj.data)


# --- the review workflow: file history, commit ranges, approvals, promote writes -----------------


def deployed_shas(
    repo: str | Path,
    paths: Iterable[str],
    *,
    ref: str = "HEAD",
    before: bool = False,
    limits: ReadLimits | None = None,
) -> dict[str, list[str]]:
    """For each deploy file: the SHAs that were its first token in the commits reachable from ``ref``
    (with ``before``: from ``ref``'s parents, so ``ref``'s own change does not count), newest first.

    Bounded: each distinct version is read once, only when its object header says it is within
    the deploy-file limit, and only its first token is kept; the walk stops after
    ``limits.history_commits`` commits (logged). Lines below the first token never count: anyone
    can write a SHA there in the same commit that deploys it elsewhere.
    """
    limits = limits or ReadLimits.from_env()
    repository = open_repository(repo)
    start = resolve_commit(repository, ref)
    wanted = list(dict.fromkeys(paths))
    found: dict[str, dict[str, None]] = {p: {} for p in wanted}
    tips = [p.id for p in start.parents] if before else [start.id]
    if not tips or not wanted:
        return {p: [] for p in wanted}
    walker = repository.walk(tips[0], pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    for tip in tips[1:]:
        walker.push(tip)
    tokens: dict[str, str | None] = {}
    for count, commit in enumerate(walker):
        if count == limits.history_commits:
            log.warning("history.truncated", ref=ref, commits=count, paths=wanted)
            break
        tree = commit.tree
        for path in wanted:
            entry = _entry_id(tree, path)
            if entry is None or MODE_KIND.get(entry[1]) != FILE:
                continue
            if entry[0] not in tokens:
                tokens[entry[0]] = _first_token(repository, entry[0], path, limits.deploy_file_bytes)
            sha = tokens[entry[0]]
            if sha is not None:
                found[path].setdefault(sha, None)
    return {p: list(found[p]) for p in wanted}


def _first_token(repository: pygit2.Repository, oid: str, path: str, limit: int) -> str | None:
    try:
        _, size = repository.odb.read_header(oid)
        if size > limit:
            return None
        data = bytes(repository[oid].read_raw())
    except (KeyError, ValueError, pygit2.GitError):
        return None
    return quick_sha(data) or parse_deploy_file(data, path=path, max_bytes=limit).sha


def source_repo_path(root: Path, source: str) -> Path | None:
    """The local path of an app's ``source`` repo (relative to the deploy repo); None if remote or absent."""
    return _local_source(root, source)


def local_sources(repo: str | Path, config: Config | None) -> dict[str, Path]:
    """app -> its ``source`` repo on this disk, for the apps that have one."""
    if config is None:
        return {}
    root = repo_root(open_repository(repo))
    found = {name: source_repo_path(root, app.source) for name, app in config.apps.items() if app.source}
    return {name: path for name, path in found.items() if path is not None}


def commit_range(
    source: str | Path, old: str, new: str, *, limit: int = 50
) -> tuple[list[CommitInfo], bool, bool] | None:
    """Commits in ``new`` but not in ``old`` (newest first, at most ``limit``), whether ``new`` descends
    from ``old``, and whether the list was cut. None when either SHA is not a commit in ``source``."""
    try:
        repository = open_repository(source)
        new_c = resolve_commit(repository, new)
        old_c = resolve_commit(repository, old)
    except RepoError:
        return None
    descendant = new_c.id == old_c.id or bool(repository.descendant_of(new_c.id, old_c.id))
    walker = repository.walk(new_c.id, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    walker.hide(old_c.id)
    out: list[CommitInfo] = []
    for commit in walker:
        if len(out) == limit:
            return out, descendant, True
        out.append(_commit_info(commit))
    return out, descendant, False


def introducing_commits(repo: str | Path, path: str, *, ref: str = "HEAD") -> list[CommitInfo]:
    """The commits that brought ``path``'s content at ``ref`` in: the one that last changed it, the merge
    on ``ref``'s first-parent line that brought that commit in (if any), and ``ref``'s own commit."""
    repository = open_repository(repo)
    head = resolve_commit(repository, ref)
    changed = last_change(repo, path, ref=ref)
    out: dict[str, CommitInfo] = {}
    if changed is not None:
        out[changed.sha] = changed
        target = pygit2.Oid(hex=changed.sha)
        commit: pygit2.Commit | None = head
        while commit is not None and commit.id != target:
            parents = commit.parents
            if len(parents) >= 2 and not _reaches(repository, parents[0].id, target) and any(
                p.id == target or _reaches(repository, p.id, target) for p in parents[1:]
            ):
                out[str(commit.id)] = _commit_info(commit)
                break
            commit = parents[0] if parents else None
    out.setdefault(str(head.id), _commit_info(head))
    return list(out.values())


def commit_relation(repo: str | Path, desired: str, live: str) -> Relation:
    """How the ``live`` deploy commit relates to the ``desired`` one, from the local clone's history.

    A live commit that is not in the clone, or a shallow clone where neither reaches the other, is
    UNKNOWN rather than a guess."""
    repository = open_repository(repo)
    try:
        want = pygit2.Oid(hex=desired)
        have = pygit2.Oid(hex=live)
    except (ValueError, TypeError):
        return Relation.UNKNOWN
    if want == have:
        return Relation.SAME
    try:
        repository[have]
        repository[want]
    except (KeyError, ValueError):
        return Relation.UNKNOWN
    try:
        if repository.descendant_of(want, have):
            return Relation.FORWARD
        if repository.descendant_of(have, want):
            return Relation.LIVE_NEWER
    except pygit2.GitError:
        return Relation.UNKNOWN
    return Relation.UNKNOWN if repository.is_shallow else Relation.DIVERGED


def _reaches(repository: pygit2.Repository, start: pygit2.Oid, target: pygit2.Oid) -> bool:
    return start == target or bool(repository.descendant_of(start, target))


def commit_signature(repo: str | Path, sha: str) -> tuple[bytes, bytes] | None:
    """A signed commit's (signature, signed payload), or None when it is not signed."""
    commit = resolve_commit(open_repository(repo), sha)
    signature, payload = commit.gpg_signature
    if signature is None or payload is None:
        return None
    return bytes(signature), bytes(payload)


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
