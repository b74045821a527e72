"""Production approvals: does a deploy commit carry an approval from one of the environment's approvers?

Two kinds of evidence count (``require_approval: true`` in deployctl.yaml):

- a merge commit whose ``Reviewed-by:``/``Approved-by:`` trailer names an approver (``@user``,
  ``@org/team`` or an email, matched literally and case-insensitively; an approver cannot approve
  their own change);
- a commit signed by an allowed key: SSH signatures are verified with ``ssh-keygen -Y verify``
  against an allowed-signers file, GPG signatures with ``gpg --verify`` against a keyring that
  holds only approvers' public keys. Both are controller settings (``DEPLOYCTL_ALLOWED_SIGNERS``,
  ``DEPLOYCTL_GPG_HOME``), never read from the deploy repo, so a pull request cannot widen them.

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


def check_approval(
    commits: Sequence[ApprovalCommit],
    approvers: Sequence[str],
    *,
    author: str,
    allowed_signers: Path | None = None,
    gnupg_home: Path | None = None,
) -> Verdict:
    """Approved when a merge commit has an approver's trailer or any commit has an allowed signature."""
    for c in commits:
        if c.parents >= 2:
            who = trailer_approver(c.reviewers, approvers, author=author)
            if who is not None:
                return Verdict(True, f"merge commit {c.sha[:12]} approved by {who}")
    tried: list[str] = []
    for c in commits:
        if c.signature is None or c.signed_data is None:
            continue
        if c.signature.lstrip().startswith(b"-----BEGIN SSH SIGNATURE"):
            if allowed_signers is None:
                tried.append(f"{c.sha[:12]} is SSH-signed but DEPLOYCTL_ALLOWED_SIGNERS is not set")
                continue
            principal = verify_ssh(c.signature, c.signed_data, allowed_signers)
            if principal is not None:
                return Verdict(True, f"commit {c.sha[:12]} signed by {principal} (ssh)")
            tried.append(f"{c.sha[:12]} has an SSH signature by no allowed signer")
        else:
            if gnupg_home is None:
                tried.append(f"{c.sha[:12]} is GPG-signed but DEPLOYCTL_GPG_HOME is not set")
                continue
            key = verify_gpg(c.signature, c.signed_data, gnupg_home)
            if key is not None:
                return Verdict(True, f"commit {c.sha[:12]} signed by GPG key {key}")
            tried.append(f"{c.sha[:12]} has a GPG signature by no allowed key")
    detail = "; ".join(tried)
    return Verdict(
        False,
        "no merge commit with a Reviewed-by:/Approved-by: trailer from an approver "
        f"({', '.join(approvers) or 'none configured'}) and no commit signed by an allowed key"
        + (f" ({detail})" if detail else ""),
    )


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


def verify_gpg(signature: bytes, data: bytes, gnupg_home: Path) -> str | None:
    """The fingerprint of the key in ``gnupg_home`` that made a good ``signature`` over ``data``, or None."""
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
    good = any(line.startswith("[GNUPG:] GOODSIG ") for line in status)
    for line in status:
        if good and line.startswith("[GNUPG:] VALIDSIG "):
            return line.split()[2]
    return None
