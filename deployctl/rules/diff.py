"""What a change to the deploy repo does: per env/app the old and new SHA, image, approvals, gates
and the app commits in between.

:func:`diff_states` and :func:`with_details` are pure: the two desired states, the gate results
(:mod:`deployctl.reconcile.policy`) and the commit ranges (:mod:`deployctl.app.diff`) come in as values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from deployctl.model.problem import Problem
from deployctl.model.state import DesiredState, Target
from deployctl.model.vocabulary import DiffStatus
from deployctl.rules.gates import GateResult

ADDED = DiffStatus.ADDED
CHANGED = DiffStatus.CHANGED
REMOVED = DiffStatus.REMOVED
UNCHANGED = DiffStatus.UNCHANGED
INVALID = DiffStatus.INVALID


@dataclass(frozen=True)
class CommitLine:
    """An app commit as listed in a diff: short SHA, author, first line of the message."""

    sha: str
    author: str
    summary: str

    def as_dict(self) -> dict[str, object]:
        return {"sha": self.sha, "author": self.author, "summary": self.summary}


@dataclass(frozen=True)
class CommitRange:
    """The app commits from the old SHA (excluded) to the new one, newest first.

    ``descendant`` is False when the new SHA does not contain the old one: a step backwards or
    sideways, which reviewers should notice.
    """

    commits: tuple[CommitLine, ...]
    descendant: bool
    truncated: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "commits": [c.as_dict() for c in self.commits],
            "descendant": self.descendant,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class TargetDiff:
    """One env/app between two refs of the deploy repo."""

    env: str
    app: str
    status: DiffStatus
    path: str
    line: int
    old_sha: str | None
    new_sha: str | None
    old_image: str | None
    new_image: str | None
    needs_approval: bool
    approvers: tuple[str, ...] = ()
    gates: tuple[GateResult, ...] = ()
    commits: CommitRange | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.env, self.app)

    @property
    def gates_ok(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def warnings(self) -> tuple[str, ...]:
        if self.commits is not None and not self.commits.descendant and self.old_sha and self.new_sha:
            return (
                f"{self.new_sha[:12]} is not a descendant of {self.old_sha[:12]}: this goes backwards "
                "(or sideways); commits in the old SHA are not in the new one",
            )
        return ()

    def as_dict(self) -> dict[str, object]:
        return {
            "env": self.env,
            "app": self.app,
            "status": str(self.status),
            "path": self.path,
            "line": self.line,
            "old_sha": self.old_sha,
            "new_sha": self.new_sha,
            "old_image": self.old_image,
            "new_image": self.new_image,
            "needs_approval": self.needs_approval,
            "approvers": list(self.approvers),
            "gates": [g.as_dict() for g in self.gates],
            "commits": self.commits.as_dict() if self.commits is not None else None,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class StateDiff:
    """Everything a pull request to the deploy repo changes, and whether it may be merged."""

    base_ref: str
    head_ref: str
    base_commit: str | None
    head_commit: str | None
    targets: tuple[TargetDiff, ...]
    problems: tuple[Problem, ...] = field(default=())  # the head's problems plus failed gates

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems) and all(t.gates_ok for t in self.targets)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "base": {"ref": self.base_ref, "commit": self.base_commit},
            "head": {"ref": self.head_ref, "commit": self.head_commit},
            "targets": [t.as_dict() for t in self.targets],
            "problems": [p.as_dict() for p in self.problems],
        }


def diff_states(base: DesiredState, head: DesiredState, *, include_unchanged: bool = False) -> StateDiff:
    """Compare two desired states per env/app. Approvals come from the head's deployctl.yaml. A head
    deploy file that is invalid (itself or through the config) is a row of its own: nothing is applied for it."""
    old = {t.key: t for t in base.targets}
    new = {t.key: t for t in head.targets}
    invalid = head.invalid()
    out: list[TargetDiff] = []
    for key in sorted(old.keys() | new.keys() | invalid):
        before, after = old.get(key), new.get(key)
        if key in invalid:
            status = INVALID
        elif before is None:
            status = ADDED
        elif after is None:
            status = REMOVED
        elif before.sha != after.sha or before.image != after.image:
            status = CHANGED
        else:
            status = UNCHANGED
        if status == UNCHANGED and not include_unchanged:
            continue
        out.append(_target_diff(key, status, before, after, head))
    return StateDiff(
        base_ref=base.ref,
        head_ref=head.ref,
        base_commit=base.commit,
        head_commit=head.commit,
        targets=tuple(out),
        problems=head.problems,
    )


def _target_diff(
    key: tuple[str, str], status: DiffStatus, before: Target | None, after: Target | None, head: DesiredState
) -> TargetDiff:
    env, app = key
    cfg = head.config.environments.get(env) if head.config is not None else None
    shown = after or before
    where = next(((p.path, p.line or 1) for p in head.errors if (p.env, p.app) == key), None)
    path, line = (shown.path, shown.line) if shown is not None else where or (f"environments/{env}/{app}.deploy", 1)
    return TargetDiff(
        env=env,
        app=app,
        status=status,
        path=path,
        line=line,
        old_sha=before.sha if before else None,
        new_sha=after.sha if after else None,
        old_image=before.image if before else None,
        new_image=after.image if after else None,
        needs_approval=bool(cfg and (cfg.require_approval or cfg.approvers)),
        approvers=cfg.approvers if cfg else (),
    )


def with_details(
    diff: StateDiff,
    *,
    gates: Iterable[GateResult] = (),
    commits: Mapping[tuple[str, str], CommitRange] | None = None,
) -> StateDiff:
    """The diff with gate results and commit ranges attached to targets; failed gates become problems."""
    by_key: dict[tuple[str, str], list[GateResult]] = {}
    for g in gates:
        by_key.setdefault((g.env, g.app), []).append(g)
    commits = commits or {}
    targets = tuple(
        replace(t, gates=tuple(by_key.get(t.key, ())), commits=commits.get(t.key, t.commits))
        for t in diff.targets
    )
    failed = tuple(g.problem() for t in targets for g in t.gates if not g.passed)
    return replace(diff, targets=targets, problems=diff.problems + failed)
