"""Promote and roll back by writing deploy files forward. Pure text transforms, no I/O.

A deploy file's first token is the SHA to run; the lines below are its own history, newest
first. Promote and rollback never rewrite that history: they prepend the new SHA and a note
line (``* promoted from staging by ... on ...``) and keep everything below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from deployctl.errors import InvalidInputError
from deployctl.model.state import DesiredState
from deployctl.rules.deployfile import FULL_SHA, parse_deploy_file, previous_shas


class PromoteError(InvalidInputError):
    """A promote or rollback cannot be written: unknown app or environment, nothing to do, unsafe SHA."""


@dataclass(frozen=True)
class Promotion:
    """One deploy file to rewrite: ``path`` goes from ``old_sha`` to ``new_sha``."""

    env: str
    app: str
    path: str
    old_sha: str | None  # None when the target has no deploy file yet
    new_sha: str
    from_env: str | None = None  # None for a rollback


def deploy_path(env: str, app: str) -> str:
    return f"environments/{env}/{app}.deploy"


def note_line(
    action: str, *, who: str, when: datetime, message: str | None = None
) -> str:
    """The note written under a prepended SHA: what happened, who did it, when (UTC)."""
    text = f"* {action} by {who} on {when.strftime('%Y-%m-%dT%H:%MZ')}"
    if message:
        text += ": " + " ".join(message.split())
    return text


def prepend(data: bytes | None, sha: str, note: str) -> bytes:
    """``sha`` and ``note`` on top of the file's current content, which is kept below unchanged."""
    if FULL_SHA.fullmatch(sha) is None:
        raise PromoteError(f"{sha!r} is not a full lowercase commit SHA")
    if not data:
        return f"{sha}\n{note}\n".encode()
    newline = "\r\n" if b"\r\n" in data else "\n"
    body = data if data.endswith(b"\n") else data + newline.encode()
    return f"{sha}{newline}{note}{newline}".encode() + body


def plan_promotions(
    source: DesiredState,
    target: DesiredState,
    *,
    from_env: str,
    to_env: str,
    apps: Iterable[str] | None,
) -> list[Promotion]:
    """What promoting ``apps`` (None: every app that differs) from one environment to another writes.

    ``source`` and ``target`` are usually the same work-tree state. Raises PromoteError when an
    environment or app is unknown, invalid, or (for a named app) already at the source's SHA.
    """
    config = target.config
    if config is None:
        raise PromoteError("deployctl.yaml is missing or invalid; run deployctl validate --worktree")
    for env in (from_env, to_env):
        if env in config.invalid_environments:
            raise PromoteError(f"{config.path}: environment {env!r} has errors; fix those first "
                               "(deployctl validate --worktree)")
        if env not in config.environments:
            known = ", ".join(sorted(config.environments)) or "none"
            raise PromoteError(f"deployctl.yaml: unknown environment {env!r} (known: {known})")
    if from_env == to_env:
        raise PromoteError(f"--from and --to are both {from_env!r}; promote between two environments")
    out: list[Promotion] = []
    if apps is None:
        for t in source.targets:
            if t.env != from_env:
                continue
            current = target.target(to_env, t.app)
            if current is not None and current.sha != t.sha:
                out.append(Promotion(to_env, t.app, current.path, current.sha, t.sha, from_env))
        return out
    for app in apps:
        src = source.target(from_env, app)
        path = deploy_path(from_env, app)
        if src is None:
            why = _why_missing(source, from_env, app)
            raise PromoteError(f"{path}: {why}; nothing to promote")
        current = target.target(to_env, app)
        to_path = deploy_path(to_env, app)
        if current is None and (to_env, app) in target.invalid():
            raise PromoteError(f"{to_path} has errors; run deployctl validate --worktree and fix them first")
        if current is not None and current.sha == src.sha:
            raise PromoteError(f"{to_path}:{current.line}: {app} already runs {src.sha[:12]} in {to_env}")
        out.append(Promotion(to_env, app, to_path, current.sha if current else None, src.sha, from_env))
    return out


def _why_missing(state: DesiredState, env: str, app: str) -> str:
    if state.config is not None and app not in state.config.apps:
        return f"unknown app {app!r} (not under apps: in deployctl.yaml)"
    if (env, app) in state.invalid():
        return "has errors (run deployctl validate --worktree)"
    return f"no deploy file for {app} in {env}"


def ran_shas(data: bytes, git_history: Iterable[str] = ()) -> list[str]:
    """SHAs that ran in an environment, newest first: the file's own list, then its git history."""
    seen: dict[str, None] = {}
    parsed = parse_deploy_file(data, path="-")
    if parsed.sha is not None:
        seen[parsed.sha] = None
    for sha in (*previous_shas(data), *git_history):
        seen.setdefault(sha, None)
    return list(seen)


def choose_rollback(
    data: bytes,
    *,
    path: str,
    to: str | None = None,
    steps: int | None = None,
    git_history: Iterable[str] = (),
    force: bool = False,
) -> str:
    """The earlier SHA a rollback deploys.

    ``steps=N`` (default 1) is the Nth distinct SHA below the current one in the file's own
    history. ``to`` is a full SHA or a unique prefix (at least 7 characters) of a SHA that ran in
    this environment (the file's list or its git history); another SHA needs ``force`` and a full SHA.
    """
    parsed = parse_deploy_file(data, path=path)
    if parsed.sha is None:
        first = parsed.problems[0] if parsed.problems else None
        raise PromoteError(str(first) if first else f"{path}: cannot be read")
    current = parsed.sha
    ran = ran_shas(data, git_history)
    earlier = [s for s in ran if s != current]
    if to is None:
        n = 1 if steps is None else steps
        if n < 1:
            raise PromoteError(f"--steps must be 1 or more, not {n}")
        listed = [s for s in dict.fromkeys(previous_shas(data)) if s != current]
        if n > len(listed):
            raise PromoteError(
                f"{path}: only {len(listed)} earlier SHA{'s' * (len(listed) != 1)} listed below line "
                f"{parsed.line}; use --to SHA"
            )
        return listed[n - 1]
    wanted = to.strip().lower()
    if wanted == current or (len(wanted) >= 7 and current.startswith(wanted)):
        raise PromoteError(f"{path}:{parsed.line}: {current[:12]} is already the current SHA")
    matches = [s for s in earlier if s.startswith(wanted)] if len(wanted) >= 7 else []
    if len(matches) > 1:
        raise PromoteError(f"{path}: {to!r} matches {len(matches)} SHAs; give more characters")
    if matches:
        return matches[0]
    if not force:
        raise PromoteError(
            f"{path}: {to!r} never ran in this environment (not in the file's history nor its git "
            "history); check the SHA, or pass --force with the full SHA"
        )
    if FULL_SHA.fullmatch(wanted) is None:
        raise PromoteError(f"{path}: with --force, give the full 40-character SHA, not {to!r}")
    return wanted
