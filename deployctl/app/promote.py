"""Promote and roll back: write a SHA at the top of a deploy file in the work tree (and commit it),
never rewriting the file's history. The text transforms are pure (:mod:`deployctl.rules.promote`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deployctl.edges.git import history as git_history
from deployctl.edges.git import repo as repo_edge
from deployctl.rules.promote import (
    PromoteError,
    Promotion,
    choose_rollback,
    deploy_path,
    note_line,
    plan_promotions,
    prepend,
)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def workdir(repo: str) -> Path:
    """The work tree of ``repo`` (a bare repo has none: promote and rollback write files)."""
    repository = repo_edge.open_repository(repo)
    if repository.is_bare or not repository.workdir:
        raise PromoteError(f"{repo}: a bare repo has no work tree; run this in a clone")
    return Path(repository.workdir)


def _read(root: Path, path: str) -> bytes | None:
    try:
        return (root / path).read_bytes()
    except FileNotFoundError:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def _write(repo: str, files: dict[str, bytes], *, commit: bool, message: str) -> str | None:
    repo_edge.write_worktree_files(repo, files)
    if not commit:
        return None
    return repo_edge.commit_files(repo, files, message=message)


def promote_apps(
    repo: str, apps: Sequence[str] | None, *, from_env: str, to_env: str, message: str | None = None,
    commit: bool = False, now: datetime | None = None,
) -> tuple[list[Promotion], str | None]:
    """Promote (write, and with ``commit`` commit) ``apps`` (None: all that differ). Returns what changed."""
    root = workdir(repo)
    state = repo_edge.read_desired_state(repo, worktree=True)
    promotions = plan_promotions(state, state, from_env=from_env, to_env=to_env, apps=apps)
    if not promotions:
        return [], None
    name, email = repo_edge.identity(repo)
    when = now or _now()
    files: dict[str, bytes] = {}
    for p in promotions:
        note = note_line(f"promoted from {from_env}", who=f"{name} <{email}>", when=when, message=message)
        files[p.path] = prepend(_read(root, p.path), p.new_sha, note)
    if len(promotions) == 1:
        p = promotions[0]
        subject = f"Promote {p.app} from {from_env} to {to_env} ({p.new_sha[:12]})"
    else:
        subject = f"Promote {len(promotions)} apps from {from_env} to {to_env}"
    body = "\n".join(f"- {p.app}: {_short(p.old_sha)} -> {p.new_sha[:12]}" for p in promotions)
    text = f"{subject}\n\n{body}\n" + (f"\n{message}\n" if message else "")
    return promotions, _write(repo, files, commit=commit, message=text)


@dataclass(frozen=True)
class RollbackChoice:
    """Which earlier SHA a rollback deploys: ``to`` (a SHA the file lists), else ``steps`` back (default 1);
    ``force`` allows a SHA that never ran in the environment."""

    to: str | None = None
    steps: int | None = None
    force: bool = False


def rollback_app(
    repo: str, app: str, *, env: str, choice: RollbackChoice | None = None, message: str | None = None,
    commit: bool = False, now: datetime | None = None,
) -> tuple[Promotion, str | None]:
    """Deploy an earlier SHA by prepending it to the deploy file (never rewriting history)."""
    choice = choice or RollbackChoice()
    root = workdir(repo)
    path = deploy_path(env, app)
    data = _read(root, path)
    if data is None:
        raise PromoteError(f"{path}: no such deploy file in the work tree")
    ran: list[str] = []
    repository = repo_edge.open_repository(repo)
    if not repository.head_is_unborn:
        ran = git_history.deployed_shas(repo, [path], ref="HEAD")[path]
    chosen = choose_rollback(data, path=path, to=choice.to, steps=choice.steps, git_history=ran,
                             force=choice.force)
    current = data.split(None, 1)[0].decode()
    name, email = repo_edge.identity(repo)
    note = note_line(f"rollback from {current[:12]}", who=f"{name} <{email}>", when=now or _now(),
                     message=message)
    files = {path: prepend(data, chosen, note)}
    text = f"Roll back {app} in {env} to {chosen[:12]} (from {current[:12]})\n" + (
        f"\n{message}\n" if message else "")
    return Promotion(env, app, path, current, chosen), _write(repo, files, commit=commit, message=text)


