"""The approval rule is pure: who signed a commit comes in as a function (the edge runs ssh-keygen/gpg)."""

from __future__ import annotations

from deployctl.rules.approval import ApprovalCommit, Signer, check_approval

RITA = Signer("rita@example.com (ssh)", frozenset({"rita@example.com"}))
MALLORY = Signer("mallory@example.com (ssh)", frozenset({"mallory@example.com"}))


def commit(sha: str, *, signed: bool, reviewers: tuple[str, ...] = ()) -> ApprovalCommit:
    return ApprovalCommit(sha=sha * 40, author_email="mallory@example.com", parents=2, reviewers=reviewers,
                          signature=b"sig" if signed else None, signed_data=b"data" if signed else None)


def signed_by(who: dict[str, Signer]):
    return lambda c: (who.get(c.sha[0]), None if c.sha[0] in who else f"{c.sha[:12]} has a signature by no allowed signer")


def test_an_unsigned_trailer_does_not_approve() -> None:
    verdict = check_approval([commit("a", signed=False, reviewers=("Rita <rita@example.com>",))], ["rita@example.com"],
                             author="mallory@example.com", signer_of=signed_by({}))
    assert not verdict.approved
    assert "has a trailer but is not signed" in verdict.evidence


def test_a_commit_signed_by_the_changes_own_author_does_not_approve() -> None:
    verdict = check_approval([commit("b", signed=True, reviewers=("Rita <rita@example.com>",))], ["rita@example.com"],
                             author="mallory@example.com", signer_of=signed_by({"b": MALLORY}))
    assert not verdict.approved
    assert "the change's own author" in verdict.evidence


def test_a_commit_signed_by_another_allowed_signer_approves_and_names_the_approver() -> None:
    verdict = check_approval([commit("c", signed=True, reviewers=("Rita <rita@example.com>",))], ["rita@example.com"],
                             author="mallory@example.com", signer_of=signed_by({"c": RITA}))
    assert verdict.approved
    assert "signed by rita@example.com (ssh), approved by" in verdict.evidence


def test_why_a_signature_does_not_count_is_reported() -> None:
    verdict = check_approval([commit("d", signed=True)], ["rita@example.com"], author="mallory@example.com",
                             signer_of=signed_by({}))
    assert not verdict.approved
    assert "by no allowed signer" in verdict.evidence
