"""Production approvals: does a deploy commit carry an approval from one of the environment's approvers?

What counts (``require_approval: true`` in deployctl.yaml) is a commit signed by an allowed key
whose signer is not the change's author: SSH signatures are verified with ``ssh-keygen -Y verify``
against an allowed-signers file (the signer is its principal), GPG signatures with ``gpg --verify``
against a keyring that holds only approvers' public keys (the signer is the key's user id). Both
are controller settings (``DEPLOYCTL_ALLOWED_SIGNERS``, ``DEPLOYCTL_GPG_HOME``), never read from the
deploy repo, so a pull request cannot widen them. A ``Reviewed-by:``/``Approved-by:`` trailer
(``@user``, ``@org/team`` or an email, matched case-insensitively) names the approver only inside
such a signed commit: unsigned, anyone who can push could write it.

Trailer matching is pure; signature checks run the two tools (no shell) on temporary files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from deployctl.errors import DeployctlError

_EMAIL = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^\s<>]+@[^\s<>]+\.[^\s<>]+)")
_HANDLE = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:/[A-Za-z0-9._-]+)?")


class ApprovalError(DeployctlError):
    """A signature cannot be checked (missing tool, unreadable allowed-signers file or keyring)."""


@dataclass(frozen=True)
class ApprovalCommit:
    """A commit that may carry an approval: its trailers, author and (when signed) its signature."""

    sha: str
    author_email: str
    parents: int
    reviewers: tuple[str, ...]
    signature: bytes | None = None
    signed_data: bytes | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether a change is approved, and by what (or why not)."""

    approved: bool
    evidence: str

    def __bool__(self) -> bool:
        return self.approved


def identities(text: str) -> set[str]:
    """The emails and @handles a trailer value names, lowercased."""
    found = {m.group(0).lower() for m in _HANDLE.finditer(text) if not _is_email_domain(text, m.start())}
    for m in _EMAIL.finditer(text):
        found.add((m.group(1) or m.group(2)).lower())
    return found


def _is_email_domain(text: str, at: int) -> bool:
    # "ana@example.com": the "@example" is a domain, not a handle
    return at > 0 and not text[at - 1].isspace() and text[at - 1] not in "<(,"


def trailer_approver(reviewers: Iterable[str], approvers: Sequence[str], *, author: str = "") -> str | None:
    """The first approver named by a trailer, or None. A trailer naming the change's author does not count."""
    wanted = {a.lower() for a in approvers}
    author = author.lower()
    for reviewer in reviewers:
        names = identities(reviewer)
        if author and author in names:
            continue
        hit = sorted(names & wanted)
        if hit:
            return hit[0]
    return None


@dataclass(frozen=True)
class Signer:
    """Who made a verified signature: a name for messages and the emails it stands for."""

    name: str
    emails: frozenset[str]


#: Who signed a commit (verified against the operator's allowed signers), or None and why not. The
#: verification itself runs ssh-keygen/gpg: :class:`deployctl.edges.signatures.SignatureVerifier`.
SignerOf = Callable[[ApprovalCommit], tuple[Signer | None, str | None]]


def check_approval(
    commits: Sequence[ApprovalCommit],
    approvers: Sequence[str],
    *,
    author: str,
    signer_of: SignerOf,
) -> Verdict:
    """Approved when a commit is signed by an allowed signer who is not the change's ``author``.

    Its ``Reviewed-by:``/``Approved-by:`` trailer (naming an approver other than the author) is
    reported as the approval; a trailer in an unsigned commit, or in one the author signed,
    counts for nothing, since anyone who can push can write one.
    """
    author = author.lower()
    tried: list[str] = []
    for c in commits:
        if c.signature is None or c.signed_data is None:
            if c.reviewers:
                tried.append(f"{c.sha[:12]} has a trailer but is not signed, so it does not count")
            continue
        signer, why_not = signer_of(c)
        if signer is None:
            if why_not:
                tried.append(why_not)
            continue
        if author and author in signer.emails:
            tried.append(f"{c.sha[:12]} is signed by {signer.name}, the change's own author")
            continue
        who = trailer_approver(c.reviewers, approvers, author=author)
        if who is not None:
            return Verdict(True, f"commit {c.sha[:12]} signed by {signer.name}, approved by {who}")
        return Verdict(True, f"commit {c.sha[:12]} signed by {signer.name}")
    detail = "; ".join(tried)
    return Verdict(
        False,
        f"no commit signed by an allowed signer other than the change's author ({author or 'unknown'}) "
        f"approves it (approvers: {', '.join(approvers) or 'none configured'})"
        + (f" ({detail})" if detail else ""),
    )
