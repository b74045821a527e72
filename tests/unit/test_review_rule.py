"""The forge-approval rule (rules/review.py) and `require_approval: forge` in deployctl.yaml, on plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deployctl.model.config import EnvironmentConfig, load_config
from deployctl.model.review import PullRequest, Review, ReviewFacts, ReviewState
from deployctl.rules.review import ReviewPolicy, check_reviews, judged_under, weakens

HEAD = "a" * 40
OLD = "b" * 40
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PR = PullRequest(number=7, url="https://forge.example/acme/deploy/pulls/7", author="alice", head_sha=HEAD,
                 merged=True, commit_authors=frozenset({"alice"}), commit_emails=frozenset({"alice@example.com"}))
POLICY = ReviewPolicy("production", ("@bob", "@acme/sre"), 1)


def review(who: str, state: ReviewState = ReviewState.APPROVED, *, sha: str | None = HEAD, minutes: int = 0,
           **kw: object) -> Review:
    return Review(who, state, sha, T0 + timedelta(minutes=minutes), order=minutes, **kw)  # type: ignore[arg-type]


def verdict(*reviews: Review, pr: PullRequest | None = PR, policy: ReviewPolicy = POLICY, **kw: object):
    return check_reviews(ReviewFacts(pr, tuple(reviews), **kw), policy)  # type: ignore[arg-type]


def test_an_approvers_approval_on_the_final_head_approves_and_is_recorded():
    v = verdict(review("bob"))
    assert v.approved
    assert v.record is not None and v.record.number == 7 and v.record.url == PR.url
    assert [(a.who, a.when, a.head_sha) for a in v.record.approvals] == [("@bob", T0, HEAD)]


def test_a_direct_push_is_not_approved_and_says_so():
    v = verdict(pr=None)
    assert not v.approved
    assert "require_approval: forge" in v.reason and "direct push" in v.reason


def test_an_approval_on_an_earlier_head_is_stale():
    v = verdict(review("bob", sha=OLD))
    assert not v.approved
    assert "stale" in v.reason and PR.url in v.reason and "require_approval: forge" in v.reason


def test_the_forges_stale_flag_is_believed():
    assert not verdict(review("bob", stale=True))


def test_a_dismissed_approval_does_not_count():
    v = verdict(review("bob", dismissed=True))
    assert not v.approved and "dismissed" in v.reason


def test_approve_then_request_changes_is_refused():
    v = verdict(review("bob", minutes=0), review("bob", ReviewState.CHANGES_REQUESTED, minutes=1))
    assert not v.approved and "changes requested" in v.reason


def test_approve_then_request_changes_then_dismiss_does_not_fall_back_to_the_approval():
    v = verdict(review("bob", minutes=0), review("bob", ReviewState.CHANGES_REQUESTED, minutes=1, dismissed=True))
    assert not v.approved


def test_a_pending_review_after_an_approval_changes_nothing():
    assert verdict(review("bob", minutes=0), review("bob", ReviewState.PENDING, minutes=1)).approved


def test_someone_not_in_approvers_does_not_count():
    v = verdict(review("mallory"))
    assert not v.approved and "@mallory is not one of the approvers" in v.reason


def test_the_author_and_commit_authors_do_not_count():
    pr = PullRequest(7, PR.url, "alice", HEAD, True, commit_authors=frozenset({"alice", "bob"}))
    assert "authored a commit" in verdict(review("bob"), pr=pr).reason
    assert "author" in verdict(review("alice"), policy=ReviewPolicy("production", ("@alice",))).reason


def test_a_commit_author_known_only_by_email_does_not_count():
    pr = PullRequest(7, PR.url, "alice", HEAD, True, commit_emails=frozenset({"bob@example.com"}))
    assert not verdict(review("bob", email="Bob@Example.com"), pr=pr)


def test_a_team_approver_counts_through_the_forges_membership():
    teams = {"@acme/sre": frozenset({"carol"})}
    assert verdict(review("carol"), teams=teams).approved
    assert not verdict(review("dave"), teams=teams).approved


def test_min_approvals_counts_distinct_reviewers():
    policy = ReviewPolicy("production", ("@bob", "@carol"), 2)
    assert not verdict(review("bob"), review("bob", minutes=1), policy=policy).approved
    v = verdict(review("bob"), review("carol", minutes=1), policy=policy)
    assert v.approved and [a.who for a in v.record.approvals] == ["@bob", "@carol"]  # type: ignore[union-attr]


def test_approvals_that_cannot_be_proved_fresh_are_refused():
    v = verdict(review("bob", sha=None), not_fresh="the project does not reset approvals on push")
    assert not v.approved and "reset approvals" in v.reason and PR.url in v.reason


def env(**kw: object) -> EnvironmentConfig:
    base: dict[str, object] = {"name": "production", "namespace": "prod", "require_approval": True,
                               "approval_by": "forge", "approvers": ("@bob",)}
    base.update(kw)
    return EnvironmentConfig(**base)  # type: ignore[arg-type]


def test_weakening_changes_are_judged_under_the_settings_before_them():
    before = env()
    assert weakens(before, env(require_approval=False))
    assert weakens(before, env(approvers=("@bob", "@mallory")))
    assert weakens(env(min_approvals=2), env(min_approvals=1))
    assert weakens(before, None)
    assert judged_under(before, env(require_approval=False)) is before
    stronger = env(min_approvals=2)
    assert not weakens(before, stronger) and judged_under(before, stronger) is stronger
    assert not weakens(None, before) and not weakens(env(require_approval=False), before)


def test_require_approval_forge_and_min_approvals_are_read_from_deployctl_yaml():
    text = b"""version: 1
apps:
  web: {image: registry.example.com/web}
environments:
  production:
    namespace: prod
    approvers: ['@bob', '@acme/sre']
    require_approval: forge
    min_approvals: 2
  staging:
    namespace: staging
    require_approval: maybe
"""
    config, problems = load_config(text)
    production = config.environments["production"]
    assert production.forge_review and not production.signed_approval and production.min_approvals == 2
    assert any("require_approval must be true, false or forge" in p.message for p in problems)


def test_an_email_approver_admits_no_forge_reviewer_even_with_that_email() -> None:
    policy = ReviewPolicy("production", ("rita@example.com",))
    assert not verdict(review("mallory", email="rita@example.com"), policy=policy).approved


def test_the_dashboard_says_an_environment_needs_approving_reviews() -> None:
    from deployctl.model.config import Config
    from deployctl.ui.data import env_notes

    config = Config(1, {}, {"production": env(min_approvals=2)})
    assert env_notes(config, T0)["production"] == (None, "2 approving pull-request review(s) required from @bob")
