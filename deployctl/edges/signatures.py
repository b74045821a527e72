"""Verifying signed approval commits with ssh-keygen and gpg, against the operator's allowed signers and
keyring only. The approval rule itself is pure (:mod:`deployctl.rules.approval`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import structlog

from deployctl.rules.approval import ApprovalCommit, ApprovalError, Signer, identities

log = structlog.get_logger(__name__)

SSH_NAMESPACE = "git"  # the namespace git signs commits in


class SignatureVerifier:
    """Verifies commit signatures against the operator's keys only (never keys from the repo)."""

    def __init__(self, *, allowed_signers: Path | None, gnupg_home: Path | None) -> None:
        self.allowed_signers = allowed_signers
        self.gnupg_home = gnupg_home

    def __call__(self, c: ApprovalCommit) -> tuple[Signer | None, str | None]:
        """The signer of ``c``, or None and why it does not count."""
        tried: list[str] = []
        signer = _signer(c, self.allowed_signers, self.gnupg_home, tried)
        return signer, (tried[0] if tried else None)


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
