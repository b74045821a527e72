"""Commit history of the deploy repo and the apps' repos: who changed a file, what ran before, how two commits relate. Every walk is bounded."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pygit2
import structlog

from deployctl.edges.git.repo import RepoError, open_repository, resolve_commit
from deployctl.edges.git.tree import MODE_KIND
from deployctl.model.config import show
from deployctl.model.limits import ReadLimits
from deployctl.rules.deployfile import parse_deploy_file, quick_sha
from deployctl.rules.ordering import Relation
from deployctl.rules.validation import FILE

log = structlog.get_logger(__name__)

_TRAILER = re.compile(r"^(Reviewed-by|Approved-by):\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


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


def introduction(repo: str | Path, path: str, *, ref: str = "HEAD") -> tuple[CommitInfo | None, CommitInfo | None]:
    """How ``path``'s content at ``ref`` came in: the commit that last changed it, and the merge on
    ``ref``'s first-parent line that brought that commit in (None: it is on that line itself)."""
    repository = open_repository(repo)
    head = resolve_commit(repository, ref)
    changed = last_change(repo, path, ref=ref)
    if changed is None:
        return None, None
    target = pygit2.Oid(hex=changed.sha)
    commit: pygit2.Commit | None = head
    while commit is not None and commit.id != target:
        parents = commit.parents
        if len(parents) >= 2 and not _reaches(repository, parents[0].id, target) and any(
            p.id == target or _reaches(repository, p.id, target) for p in parents[1:]
        ):
            return changed, _commit_info(commit)
        commit = parents[0] if parents else None
    return changed, None


def introducing_commits(repo: str | Path, path: str, *, ref: str = "HEAD") -> list[CommitInfo]:
    """The commits that brought ``path``'s content at ``ref`` in: the one that last changed it, the merge
    on ``ref``'s first-parent line that brought that commit in (if any), and ``ref``'s own commit."""
    changed, merge = introduction(repo, path, ref=ref)
    out = {c.sha: c for c in (changed, merge) if c is not None}
    head = commit_info(repo, ref)
    out.setdefault(head.sha, head)
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
