"""Forge approvals (``require_approval: forge``): is a change approved by its pull request's reviews?

The rule, for the pull request that brought the change (facts from :mod:`deployctl.edges.forge`):
take each reviewer's latest non-pending review; it counts when it is an approval, not dismissed, not
stale and given on the pull request's final head SHA, by someone who is not the pull request's author,
authored or committed none of its commits, and is one of the environment's ``approvers`` (``@user``, or
``@org/team`` through the forge's team membership; email entries admit no reviewer). At least ``min_approvals`` distinct reviewers must
count. No pull request (a direct push) is not approved. A change that weakens the environment's
approval settings is judged under the settings before it (:func:`judged_under`). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployctl.model.config import EnvironmentConfig
from deployctl.model.review import Approval, PullRequest, Review, ReviewFacts, ReviewRecord, ReviewState

RULE = "require_approval: forge"


@dataclass(frozen=True)
class ReviewPolicy:
    """Who may approve an environment's changes, and how many of them must."""

    env: str
    approvers: tuple[str, ...]
    min_approvals: int = 1

    @classmethod
    def of(cls, env: EnvironmentConfig) -> ReviewPolicy:
        return cls(env.name, env.approvers, env.min_approvals)


@dataclass(frozen=True)
class ReviewVerdict:
    """Whether a change is approved by reviews; ``reason`` names the rule and the pull request when not.
    ``record`` is what the audit keeps: the pull request and the approvals that counted."""

    approved: bool
    reason: str
    record: ReviewRecord | None = None

    def __bool__(self) -> bool:
        return self.approved


def weakens(before: EnvironmentConfig | None, after: EnvironmentConfig | None) -> bool:
    """Does ``after`` ask less of forge approvals than ``before``: no longer required, more approvers
    (anyone added may approve), or fewer approvals?"""
    if before is None or not before.forge_review:
        return False
    if after is None or not after.forge_review:
        return True
    added = {a.lower() for a in after.approvers} - {a.lower() for a in before.approvers}
    return bool(added) or after.min_approvals < before.min_approvals


def judged_under(before: EnvironmentConfig | None, after: EnvironmentConfig | None) -> EnvironmentConfig | None:
    """The settings a change is judged under: the ones before it when it weakens them, else its own."""
    return before if weakens(before, after) else after


def _latest(reviews: tuple[Review, ...]) -> dict[str, Review]:
    latest: dict[str, Review] = {}
    for review in sorted(reviews, key=lambda r: (r.submitted_at is not None, r.submitted_at, r.order)):
        if review.state is ReviewState.PENDING:
            continue
        latest[review.reviewer.lower()] = review
    return latest


def _approver(login: str, policy: ReviewPolicy, facts: ReviewFacts) -> str | None:
    """The approvers entry that admits ``login``, or None. Email entries admit nobody here: the email a
    forge shows for an account may be unverified, so it proves no identity (they still name commit
    signers for ``require_approval: true``)."""
    for entry in policy.approvers:
        name = entry.lower()
        if name.startswith("@") and "/" not in name and name[1:] == login:
            return entry
        if name.startswith("@") and login in facts.teams.get(name, frozenset()):
            return entry
    return None


def _why_not(review: Review, pr: PullRequest, policy: ReviewPolicy, facts: ReviewFacts) -> str | None:
    who = f"@{review.reviewer}"
    if review.state is not ReviewState.APPROVED:
        return f"{who}'s latest review is {review.state.value.replace('_', ' ')}"
    if review.dismissed:
        return f"{who}'s approval was dismissed"
    if review.stale or (review.commit_sha is not None and review.commit_sha != pr.head_sha):
        given = (review.commit_sha or "an earlier head")[:12]
        return f"{who}'s approval is stale (given on {given}, the final head is {pr.head_sha[:12]})"
    if review.reviewer == pr.author:
        return f"{who} is the pull request's author"
    if review.reviewer in pr.commit_authors or (review.email and review.email.lower() in pr.commit_emails):
        return f"{who} authored a commit in it"
    if _approver(review.reviewer, policy, facts) is None:
        return f"{who} is not one of the approvers"
    return None


def check_reviews(facts: ReviewFacts, policy: ReviewPolicy) -> ReviewVerdict:
    """Apply the rule (module docstring) to what the forge said about one change."""
    pr = facts.pull_request
    wanted = ", ".join(policy.approvers) or "none configured"
    if pr is None:
        return ReviewVerdict(False, f"{RULE} (environments.{policy.env}): no pull request brought this change "
                                    "(a direct push); merge it through a reviewed pull request")
    where = f"pull request #{pr.number} ({pr.url})"
    record = ReviewRecord(pr.number, pr.url)
    if facts.not_fresh:
        return ReviewVerdict(False, f"{RULE} (environments.{policy.env}): {where}: approvals cannot be proved "
                                    f"fresh: {facts.not_fresh}", record)
    counted: list[Approval] = []
    not_counted: list[str] = []
    for login, review in sorted(_latest(facts.reviews).items()):
        why = _why_not(review, pr, policy, facts)
        if why is None:
            counted.append(Approval(f"@{login}", review.submitted_at, review.commit_sha or pr.head_sha))
        else:
            not_counted.append(why)
    record = ReviewRecord(pr.number, pr.url, tuple(counted))
    need = max(1, policy.min_approvals)
    if len(counted) >= need:
        who = ", ".join(a.who for a in counted)
        return ReviewVerdict(True, f"{where} approved by {who} on {pr.head_sha[:12]}", record)
    detail = "; ".join(not_counted) if not_counted else "nobody has reviewed it"
    return ReviewVerdict(
        False,
        f"{RULE} (environments.{policy.env}): {where} has {len(counted)} of the {need} approval(s) needed "
        f"from {wanted} on its final head {pr.head_sha[:12]}: {detail}",
        record,
    )
