"""Never move backwards by accident, applied to a plan: the verdict (apply, skip, refuse) for each change
from the live deploy commits of its workloads and the git ancestry in the local clone of the deploy repo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from deployctl.edges.git import history
from deployctl.edges.git import repo as repo_edge
from deployctl.model.workload import ANN_DEPLOY_COMMIT
from deployctl.rules.ordering import Ordering, Relation, Verdict, decide, worst
from deployctl.rules.plan import Change, Plan

#: (commit being reconciled, live deploy commit) -> how they relate
RelationOf = Callable[[str, str], Relation]


def git_relation(repo_path: str | Path) -> RelationOf:
    """Ancestry in the deploy repo's clone, looked up once per pair of commits (most workloads share one)."""
    cache: dict[tuple[str, str], Relation] = {}

    def relation(desired: str, live: str) -> Relation:
        key = (desired, live)
        if key not in cache:
            try:
                cache[key] = history.commit_relation(repo_path, desired, live)
            except repo_edge.RepoError:
                cache[key] = Relation.UNKNOWN
        return cache[key]

    return relation


def order_verdict(change: Change, desired_commit: str | None, relation: RelationOf | None, *,
                  force_older: bool = False, allow_non_descendant: bool = False) -> Ordering:
    """The verdict for the live deploy commits of ``change``'s workloads (the most restrictive one)."""
    if relation is None or desired_commit is None or not change.writes:
        return Ordering(Verdict.APPLY)
    lives = sorted({c for w in change.workloads if (c := w.annotations.get(ANN_DEPLOY_COMMIT))})
    return worst(decide(live, desired_commit, relation(desired_commit, live), force_older=force_older,
                        allow_non_descendant=allow_non_descendant) for live in lives)


def with_ordering(plan: Plan, relation: RelationOf) -> Plan:
    """The plan with each change that reconcile would skip or refuse saying so (for ``plan`` and ``status``)."""
    changes = []
    for change in plan.changes:
        verdict = order_verdict(change, plan.deploy_commit, relation)
        changes.append(replace(change, reason=verdict.message) if verdict.verdict is not Verdict.APPLY else change)
    return replace(plan, changes=tuple(changes))
