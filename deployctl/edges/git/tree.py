"""Reading a deploy repo's files from a git tree or a work tree, bounded and without trusting it.

Sizes come from the object header (or ``lstat``) before any file is read; a file over its limit
is listed unread, and the validation rules report it. A tree git cannot parse (an entry with an
empty name) and names that appear twice in one tree become problems naming the path.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pygit2

from deployctl.model.config import CONFIG_PATH
from deployctl.model.limits import ReadLimits
from deployctl.model.problem import ERROR, Problem
from deployctl.rules.deployfile import DEPLOY_SUFFIX, ENVIRONMENTS_DIR, split_deploy_path
from deployctl.rules.validation import DIR, FILE, OTHER, SUBMODULE, SYMLINK, RepoEntry

MODE_KIND = {  # git file mode -> what the validation rules call it
    pygit2.GIT_FILEMODE_BLOB: FILE,
    pygit2.GIT_FILEMODE_BLOB_EXECUTABLE: FILE,
    pygit2.GIT_FILEMODE_TREE: DIR,
    pygit2.GIT_FILEMODE_LINK: SYMLINK,
    pygit2.GIT_FILEMODE_COMMIT: SUBMODULE,
}


def _printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogate escapes from pygit2 or the OS)
    become \\xNN, so no message carries a lone surrogate to the terminal."""
    if name.isascii():
        return name
    return name.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


def _name(obj: Any) -> str:
    try:
        return _printable(str(obj.name))
    except UnicodeDecodeError:
        return bytes(obj.raw_name).decode("utf-8", errors="backslashreplace")


def _children(tree: Any, path: str, problems: list[Problem]) -> list[tuple[str, Any]]:
    """The entries of one git tree by name. A tree git cannot parse (an empty entry name) and names
    that appear twice (two SHAs for one target) are errors naming the path; they yield nothing."""
    try:
        objs = list(tree)
    except pygit2.GitError as exc:
        problems.append(
            _tree_problem(path, f"is a git tree that cannot be read ({one_line(exc)}); an entry has an "
                          "empty or malformed name, which a normal git client never writes: rewrite the commit")
        )
        return []
    named: list[tuple[str, Any]] = []
    for obj in objs:
        try:
            name = obj.name
        except UnicodeDecodeError:
            name = _name(obj)
        if not name.isascii():
            name = _name(obj)
        named.append((name, obj))
    if len(named) == len({name for name, _ in named}):
        return named
    counts = Counter(name for name, _ in named)
    for name, count in sorted(counts.items()):
        if count > 1:
            problems.append(
                _tree_problem(f"{path}/{name}" if path else name,
                              f"appears {count} times in one git tree, so which one counts is undefined; "
                              "a normal git client never writes this: rewrite the commit")
            )
    return [(name, obj) for name, obj in named if counts[name] == 1]


def _tree_problem(path: str, message: str) -> Problem:
    names = split_deploy_path(path)
    parts = path.split("/")
    env = names[0] if names else (parts[1] if len(parts) == 2 and parts[0] == ENVIRONMENTS_DIR else None)
    return Problem(path, None, message, ERROR, env=env, app=names[1] if names else None)


def _blob_entry(repository: pygit2.Repository, path: str, obj: Any, limit: int) -> RepoEntry:
    """A file's entry, its bytes read only when the object header says it is within ``limit``."""
    try:
        _, size = repository.odb.read_header(obj.id)
        data = bytes(obj.data) if size <= limit else None
    except (KeyError, ValueError, pygit2.GitError):
        return RepoEntry(path, FILE, None, None)
    return RepoEntry(path, FILE, data, size)


def read_tree(
    repository: pygit2.Repository, tree: pygit2.Tree, limits: ReadLimits
) -> tuple[RepoEntry | None, list[RepoEntry], list[Problem]]:
    problems: list[Problem] = []
    top = dict(_children(tree, "", problems))
    config: RepoEntry | None = None
    if CONFIG_PATH in top:
        obj: Any = top[CONFIG_PATH]
        kind = MODE_KIND.get(obj.filemode, OTHER)
        if kind == FILE:
            config = _blob_entry(repository, CONFIG_PATH, obj, limits.config_bytes)
        else:
            config = RepoEntry(CONFIG_PATH, kind)
    entries: list[RepoEntry] = []
    if ENVIRONMENTS_DIR not in top:
        return config, entries, problems
    root: Any = top[ENVIRONMENTS_DIR]
    root_kind = MODE_KIND.get(root.filemode, OTHER)
    entries.append(RepoEntry(ENVIRONMENTS_DIR, root_kind))
    if root_kind != DIR:
        return config, entries, problems
    append = entries.append
    file_mode = pygit2.GIT_FILEMODE_BLOB
    limit = limits.deploy_file_bytes
    for env_name, env_obj in _children(root, ENVIRONMENTS_DIR, problems):
        env_path = f"{ENVIRONMENTS_DIR}/{env_name}"
        env_kind = MODE_KIND.get(env_obj.filemode, OTHER)
        append(RepoEntry(env_path, env_kind))
        if env_kind != DIR:
            continue
        for name, obj in _children(env_obj, env_path, problems):
            mode = obj.filemode
            if mode != file_mode or not name.endswith(DEPLOY_SUFFIX):
                append(RepoEntry(f"{env_path}/{name}", MODE_KIND.get(mode, OTHER)))
                continue
            append(_blob_entry(repository, f"{env_path}/{name}", obj, limit))
    return config, entries, problems


def _lstat_kind(path: Path) -> tuple[str, int]:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return SYMLINK, 0
    if stat.S_ISDIR(st.st_mode):
        if (path / ".git").exists():
            return SUBMODULE, 0
        return DIR, 0
    if stat.S_ISREG(st.st_mode):
        return FILE, st.st_size
    return OTHER, 0


def _read_limited(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        return f.read(limit + 1)


def read_worktree(root: Path, limits: ReadLimits) -> tuple[RepoEntry | None, list[RepoEntry]]:
    config: RepoEntry | None = None
    config_path = root / CONFIG_PATH
    if os.path.lexists(config_path):
        kind, size = _lstat_kind(config_path)
        data = _read_limited(config_path, limits.config_bytes) if kind == FILE and size <= limits.config_bytes else None
        config = RepoEntry(CONFIG_PATH, kind, data, size)
    entries: list[RepoEntry] = []
    env_root = root / ENVIRONMENTS_DIR
    if not os.path.lexists(env_root):
        return config, entries
    root_kind, _ = _lstat_kind(env_root)
    entries.append(RepoEntry(ENVIRONMENTS_DIR, root_kind))
    if root_kind != DIR:
        return config, entries
    with os.scandir(env_root) as envs:
        env_dirs = sorted(envs, key=lambda e: e.name)
    for env_dir in env_dirs:
        env_path = f"{ENVIRONMENTS_DIR}/{_printable(env_dir.name)}"
        env_kind, _ = _lstat_kind(Path(env_dir.path))
        entries.append(RepoEntry(env_path, env_kind))
        if env_kind != DIR:
            continue
        with os.scandir(env_dir.path) as files:
            for f in sorted(files, key=lambda e: e.name):
                path = f"{env_path}/{_printable(f.name)}"
                kind, size = _lstat_kind(Path(f.path))
                if kind == FILE and f.name.endswith(DEPLOY_SUFFIX):
                    data = (
                        _read_limited(Path(f.path), limits.deploy_file_bytes)
                        if size <= limits.deploy_file_bytes
                        else None
                    )
                    entries.append(RepoEntry(path, FILE, data, size))
                else:
                    entries.append(RepoEntry(path, kind))
    return config, entries


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for error messages."""
    return " ".join(str(exc).split()) or type(exc).__name__
