"""Pull-request reviews as deployctl sees them, whichever forge they come from (values only, no I/O).

The forge edge (:mod:`deployctl.edges.forge`) turns GitHub, GitLab and Gitea answers into these; the
rule (:mod:`deployctl.rules.review`) decides on them; the audit record keeps a :class:`ReviewRecord`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class ReviewState(StrEnum):
    """A review's verdict, in the forges' common words."""

    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    COMMENTED = "commented"
    PENDING = "pending"  # a draft review, not submitted: never counts, never overrides
    DISMISSED = "dismissed"  # GitHub's state for a dismissed review (Gitea and GitLab use a flag)


@dataclass(frozen=True)
class PullRequest:
    """The pull (merge) request that brought a change, with who wrote its commits."""

    number: int
    url: str
    author: str  # forge login, lowercase
    head_sha: str  # the final head: the last commit of its branch
    merged: bool
    merge_sha: str | None = None
    commit_authors: frozenset[str] = frozenset()  # logins (lowercase) of its commits' authors and committers
    commit_emails: frozenset[str] = frozenset()  # their emails (lowercase): commits not linked to a forge user


@dataclass(frozen=True)
class Review:
    """One submitted (or pending) review of a pull request."""

    reviewer: str  # forge login, lowercase
    state: ReviewState
    commit_sha: str | None  # the head it was given on; None when the forge does not say (GitLab)
    submitted_at: datetime | None
    dismissed: bool = False
    stale: bool = False
    email: str | None = None
    order: int = 0  # the forge's order (review id), to find each reviewer's latest one


@dataclass(frozen=True)
class ReviewFacts:
    """Everything the forge said about one change: its pull request (None: a direct push), the reviews,
    the members of each ``@org/team`` approver, and why approvals cannot be proved fresh, if they cannot."""

    pull_request: PullRequest | None
    reviews: tuple[Review, ...] = ()
    teams: Mapping[str, frozenset[str]] = field(default_factory=dict)  # "@org/team" -> logins (lowercase)
    not_fresh: str | None = None  # e.g. GitLab without reset_approvals_on_push


@dataclass(frozen=True)
class Approval:
    """One approval that counted: who gave it, when, on which head."""

    who: str
    when: datetime | None
    head_sha: str

    def as_dict(self) -> dict[str, Any]:
        return {"who": self.who, "when": None if self.when is None else self.when.isoformat().replace("+00:00", "Z"),
                "head_sha": self.head_sha}


@dataclass(frozen=True)
class ReviewRecord:
    """What an audited attempt keeps of its review: the pull request and each approval that counted."""

    number: int
    url: str
    approvals: tuple[Approval, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"pull_request": {"number": self.number, "url": self.url},
                "approvals": [a.as_dict() for a in self.approvals]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReviewRecord:
        pr = data.get("pull_request") or {}
        approvals = []
        for a in data.get("approvals") or ():
            when = a.get("when")
            approvals.append(Approval(str(a.get("who", "")),
                                      datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None,
                                      str(a.get("head_sha", ""))))
        return cls(int(pr.get("number", 0)), str(pr.get("url", "")), tuple(approvals))


@dataclass(frozen=True)
class OpenedPullRequest:
    """A pull request deployctl opened (``created``) or found open for the same branch and updated."""

    number: int
    url: str
    created: bool
