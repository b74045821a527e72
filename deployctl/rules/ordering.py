"""Never move backwards by accident: what to do when the live deploy commit of a workload is not an
ancestor of the commit being reconciled (a re-run of an old CI job, a slow job finishing after a newer
one, a force-push). Pure: the ancestry is looked up by the git edge and passed in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Relation(StrEnum):
    """How the live deploy commit relates to the one being reconciled."""

    SAME = "same"
    FORWARD = "forward"  # the commit being reconciled descends from the live one: moving forward
    LIVE_NEWER = "live-newer"  # the live commit descends from the one being reconciled
    DIVERGED = "diverged"  # neither is an ancestor of the other (force-push, another branch)
    UNKNOWN = "unknown"  # the live commit is not in the local clone (a shallow checkout)


class Verdict(StrEnum):
    APPLY = "apply"
    SKIP = "skip"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Ordering:
    verdict: Verdict
    message: str = ""
    note: str | None = None  # for an apply that an override let through: goes into the audit record


_SEVERITY = {Verdict.APPLY: 0, Verdict.SKIP: 1, Verdict.REFUSE: 2}
SHALLOW_FIX = (
    "fetch the deploy repo's whole history (GitHub Actions: actions/checkout with fetch-depth: 0; "
    "GitLab CI: GIT_DEPTH: 0; else git fetch --unshallow)"
)


def _short(sha: str) -> str:
    return sha[:7]


def decide(live: str, desired: str, relation: Relation, *, force_older: bool = False,
           allow_non_descendant: bool = False) -> Ordering:
    """The verdict for one live deploy commit."""
    if relation in (Relation.SAME, Relation.FORWARD):
        return Ordering(Verdict.APPLY)
    if relation is Relation.LIVE_NEWER:
        if force_older:
            return Ordering(Verdict.APPLY, note=f"--force-older: applied deploy commit {_short(desired)} over the "
                            f"newer live deploy commit {_short(live)}")
        return Ordering(Verdict.SKIP, f"skipped: live deploy commit {_short(live)} is newer than {_short(desired)} "
                        "(the newer run is the one that counts; to roll back, run deployctl rollback, or "
                        "--force-older in an emergency)")
    if relation is Relation.DIVERGED:
        if allow_non_descendant or force_older:
            flag = "--allow-non-descendant" if allow_non_descendant else "--force-older"
            return Ordering(Verdict.APPLY, note=f"{flag}: applied deploy commit {_short(desired)} although it does "
                            f"not descend from the live deploy commit {_short(live)}")
        return Ordering(Verdict.REFUSE, f"refused: live deploy commit {_short(live)} and {_short(desired)} are on "
                        "different histories (neither is an ancestor of the other: a force-push or another "
                        "branch?); pass --allow-non-descendant to apply anyway")
    if allow_non_descendant or force_older:
        flag = "--allow-non-descendant" if allow_non_descendant else "--force-older"
        return Ordering(Verdict.APPLY, note=f"{flag}: applied deploy commit {_short(desired)} without knowing "
                        f"whether the live deploy commit {_short(live)} is newer (not in the local clone)")
    return Ordering(Verdict.REFUSE, f"refused: live deploy commit {_short(live)} is not in the local clone of the "
                    f"deploy repo, so whether {_short(desired)} is newer cannot be told; {SHALLOW_FIX}")


def worst(orderings: Iterable[Ordering]) -> Ordering:
    """The most restrictive verdict of an app's workloads (refuse > skip > apply)."""
    chosen = Ordering(Verdict.APPLY)
    for o in orderings:
        if _SEVERITY[o.verdict] > _SEVERITY[chosen.verdict] or (o.verdict is chosen.verdict and o.note
                                                                  and not chosen.note):
            chosen = o
    return chosen
