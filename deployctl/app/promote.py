"""Promote and roll back: write a SHA at the top of a deploy file in the work tree (and commit it),
never rewriting the file's history. The text transforms are pure (:mod:`deployctl.rules.promote`)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deployctl import settings
from deployctl.edges.forge import ForgeError, ForgeSettings, open_forge
from deployctl.edges.git import history as git_history
from deployctl.edges.git import repo as repo_edge
from deployctl.edges.http import origin
from deployctl.model.review import OpenedPullRequest
from deployctl.redact import redact
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


#: The pull request body for a proposed change: ``(base commit, head commit) -> markdown`` (the diff).
PullRequestBody = Callable[[str, str], str]


def propose(repo: str, files: dict[str, bytes], *, message: str, branch: str, forge: ForgeSettings,
            body: PullRequestBody, remote: str = "origin") -> OpenedPullRequest:
    """Commit ``files`` on ``branch`` (from HEAD, the work tree untouched), force-push it to ``remote`` and open
    a pull request into the current branch, or update the one already open for ``branch``.

    The push and the API calls carry the forge token, so the remote must be on the forge's host."""
    if not forge.token:
        raise ForgeError("opening a pull request needs DEPLOYCTL_FORGE_TOKEN")
    remote_at = repo_edge.remote_url(repo, remote)
    if origin(remote_at) != origin(forge.url) or urllib.parse.urlsplit(remote_at).username:
        raise ForgeError(f"remote {remote!r} ({redact(remote_at)}) is not on the forge's host "
                         f"({origin(forge.url)[1]}); the forge token is sent there only")
    base = repo_edge.current_branch(repo)
    base_sha = repo_edge.open_repository(repo).head.peel().id
    head_sha = repo_edge.commit_on_branch(repo, files, message=message, branch=branch)
    repo_edge.push_branch(repo, branch, username=settings.GIT_USERNAME.get() or "x-access-token",
                          token=forge.token, remote=remote)
    client = open_forge(forge)
    try:
        return client.open_pull_request(branch=branch, base=base, title=message.split("\n", 1)[0],
                                        body=body(str(base_sha), head_sha))
    finally:
        client.close()


def promotion_change(
    repo: str, apps: Sequence[str] | None, *, from_env: str, to_env: str, message: str | None = None,
    now: datetime | None = None,
) -> tuple[list[Promotion], dict[str, bytes], str]:
    """What promoting ``apps`` (None: all that differ) writes: the promotions, the files, the commit message."""
    root = workdir(repo)
    state = repo_edge.read_desired_state(repo, worktree=True)
    promotions = plan_promotions(state, state, from_env=from_env, to_env=to_env, apps=apps)
    if not promotions:
        return [], {}, ""
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
    return promotions, files, text


def promote_apps(
    repo: str, apps: Sequence[str] | None, *, from_env: str, to_env: str, message: str | None = None,
    commit: bool = False, now: datetime | None = None,
) -> tuple[list[Promotion], str | None]:
    """Promote (write, and with ``commit`` commit) ``apps`` (None: all that differ). Returns what changed."""
    promotions, files, text = promotion_change(repo, apps, from_env=from_env, to_env=to_env, message=message,
                                               now=now)
    if not promotions:
        return [], None
    return promotions, _write(repo, files, commit=commit, message=text)


def promote_branch(to_env: str, apps: Sequence[str] | None) -> str:
    """The branch of a promotion's pull request: the same change always gets the same branch (and pull request)."""
    return f"deployctl/promote-{to_env}-{'-'.join(sorted(apps)) if apps else 'all'}"


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
    done, files, text = rollback_change(repo, app, env=env, choice=choice, message=message, now=now)
    return done, _write(repo, files, commit=commit, message=text)


def rollback_change(
    repo: str, app: str, *, env: str, choice: RollbackChoice | None = None, message: str | None = None,
    now: datetime | None = None,
) -> tuple[Promotion, dict[str, bytes], str]:
    """What rolling ``app`` back in ``env`` writes: the promotion, the files, the commit message."""
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
    return Promotion(env, app, path, current, chosen), files, text


