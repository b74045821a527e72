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

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from deployctl.errors import DeployctlError

log = structlog.get_logger(__name__)

SSH_NAMESPACE = "git"
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


def check_approval(
    commits: Sequence[ApprovalCommit],
    approvers: Sequence[str],
    *,
    author: str,
    allowed_signers: Path | None = None,
    gnupg_home: Path | None = None,
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
        signer = _signer(c, allowed_signers, gnupg_home, tried)
        if signer is None:
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


def _signer(
    c: ApprovalCommit, allowed_signers: Path | None, gnupg_home: Path | None, tried: list[str]
) -> Signer | None:
    assert c.signature is not None and c.signed_data is not None
    if c.signature.lstrip().startswith(b"-----BEGIN SSH SIGNATURE"):
        if allowed_signers is None:
            tried.append(f"{c.sha[:12]} is SSH-signed but DEPLOYCTL_ALLOWED_SIGNERS is not set")
            return None
        principal = verify_ssh(c.signature, c.signed_data, allowed_signers)
        if principal is None:
            tried.append(f"{c.sha[:12]} has an SSH signature by no allowed signer")
            return None
        return Signer(f"{principal} (ssh)", frozenset(identities(principal)) | {principal.lower()})
    if gnupg_home is None:
        tried.append(f"{c.sha[:12]} is GPG-signed but DEPLOYCTL_GPG_HOME is not set")
        return None
    key = verify_gpg(c.signature, c.signed_data, gnupg_home)
    if key is None:
        tried.append(f"{c.sha[:12]} has a GPG signature by no allowed key")
        return None
    fingerprint, user_id = key
    return Signer(f"GPG key {fingerprint} ({user_id})", frozenset(identities(user_id)))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ApprovalError(
            f"{name} is not installed, so signed commits cannot be verified; install it "
            "(Debian: openssh-client / gnupg) or approve through a merge commit trailer"
        )
    return path


def verify_ssh(signature: bytes, data: bytes, allowed_signers: Path) -> str | None:
    """The principal of an allowed signer whose key made ``signature`` over ``data``, or None."""
    ssh_keygen = _tool("ssh-keygen")
    if not allowed_signers.is_file():
        raise ApprovalError(f"{allowed_signers}: allowed-signers file not found (DEPLOYCTL_ALLOWED_SIGNERS)")
    with tempfile.TemporaryDirectory(prefix="deployctl-sig-") as tmp:
        sig = Path(tmp) / "commit.sig"
        sig.write_bytes(signature)
        found = subprocess.run(
            [ssh_keygen, "-Y", "find-principals", "-s", str(sig), "-f", str(allowed_signers)],
            capture_output=True, timeout=30, check=False,
        )
        if found.returncode != 0:
            return None
        for principal in found.stdout.decode(errors="replace").split():
            verified = subprocess.run(
                [ssh_keygen, "-Y", "verify", "-f", str(allowed_signers), "-I", principal,
                 "-n", SSH_NAMESPACE, "-s", str(sig)],
                input=data, capture_output=True, timeout=30, check=False,
            )
            if verified.returncode == 0:
                return principal
            log.debug("approval.ssh_rejected", principal=principal, stderr=verified.stderr[-300:])
    return None


def verify_gpg(signature: bytes, data: bytes, gnupg_home: Path) -> tuple[str, str] | None:
    """(fingerprint, user id) of the key in ``gnupg_home`` that made a good ``signature`` over
    ``data``, or None."""
    gpg = _tool("gpg")
    if not gnupg_home.is_dir():
        raise ApprovalError(f"{gnupg_home}: GPG home not found (DEPLOYCTL_GPG_HOME)")
    with tempfile.TemporaryDirectory(prefix="deployctl-sig-") as tmp:
        sig, payload = Path(tmp) / "commit.sig", Path(tmp) / "commit.txt"
        sig.write_bytes(signature)
        payload.write_bytes(data)
        result = subprocess.run(
            [gpg, "--batch", "--no-tty", "--status-fd", "1", "--verify", str(sig), str(payload)],
            capture_output=True, timeout=30, check=False,
            env={**os.environ, "GNUPGHOME": str(gnupg_home)},
        )
    status = result.stdout.decode(errors="replace").splitlines()
    user_ids = [line.split(" ", 3)[3] for line in status if line.startswith("[GNUPG:] GOODSIG ") and
                line.count(" ") >= 3]
    for line in status:
        if user_ids and line.startswith("[GNUPG:] VALIDSIG "):
            return line.split()[2], user_ids[0]
    return None
