"""Deploy files: ``environments/<env>/<app>.deploy``, whose first token is the commit SHA to run. Pure.

Everything after the first whitespace-separated token is ignored: people keep earlier SHAs and
notes below it, newest first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deployctl.model.config import decode_text, dns_label_problem, show
from deployctl.model.limits import DEPLOY_FILE_BYTES
from deployctl.model.problem import ERROR, WARNING, Problem

ENVIRONMENTS_DIR = "environments"
DEPLOY_SUFFIX = ".deploy"
MAX_DEPLOY_FILE_BYTES = DEPLOY_FILE_BYTES

FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ANY_HEX = re.compile(r"[0-9a-fA-F]+")
_SHA40 = re.compile(rb"[0-9a-f]{40}")
_SEPARATORS = frozenset(b" \t\n\x0b\x0c")  # not \r: CRLF files take the slow path for their warning
_SHA_LINE = re.compile(r"^\s*([0-9a-f]{40}|[0-9a-f]{64})\b", re.MULTILINE)


@dataclass(frozen=True)
class DeployFile:
    """One parsed deploy file. ``sha`` is None when the file has an error (see ``problems``)."""

    path: str
    env: str | None
    app: str | None
    sha: str | None
    line: int  # where the SHA is (or should be)
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return self.sha is not None and not any(p.severity == ERROR for p in self.problems)


def split_deploy_path(path: str) -> tuple[str, str] | None:
    """(env, app) for a path of the form ``environments/<env>/<app>.deploy``, else None. Names unchecked."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != ENVIRONMENTS_DIR or not parts[2].endswith(DEPLOY_SUFFIX):
        return None
    return parts[1], parts[2][: -len(DEPLOY_SUFFIX)]


def parse_deploy_file(
    data: bytes,
    *,
    path: str,
    env: str | None = None,
    app: str | None = None,
    max_bytes: int = MAX_DEPLOY_FILE_BYTES,
) -> DeployFile:
    """Parse a deploy file's bytes. Never raises: every defect becomes a Problem naming path and line.

    ``env`` and ``app`` default to the names in ``path`` (environments/<env>/<app>.deploy).
    """
    if env is None and app is None:
        names = split_deploy_path(path)
        env, app = names if names is not None else (None, None)
    sha = quick_sha(data)
    if sha is not None:
        return DeployFile(path, env, app, sha, 1)

    def fail(line: int, message: str) -> DeployFile:
        return DeployFile(
            path, env, app, None, line, (Problem(path, line, message, ERROR, env=env, app=app),)
        )

    if len(data) > max_bytes:
        return fail(1, f"is {len(data)} bytes; deploy files are limited to {max_bytes} bytes")
    warnings: list[Problem] = []
    text, bad_line, message = decode_text(data, what="deploy file")
    if text is None:
        return fail(bad_line or 1, message or "cannot be read")
    if text.startswith("\ufeff"):
        return fail(1, "starts with a byte-order mark (BOM); save the file as UTF-8 without BOM")
    body = text.lstrip()
    if not body:
        return fail(1, "is empty; write the full commit SHA to deploy on the first line")
    line = text.count("\n", 0, len(text) - len(body)) + 1
    token = body.split(None, 1)[0]
    if FULL_SHA.fullmatch(token) is None:
        return fail(line, sha_problem(token))
    if "\r" in text:
        warnings.append(
            Problem(
                path,
                line,
                "has Windows (CRLF) line endings; they work, but LF keeps diffs clean",
                WARNING,
                env=env,
                app=app,
            )
        )
    return DeployFile(path, env, app, token, line, tuple(warnings))


def quick_sha(data: bytes) -> str | None:
    """The SHA of a deploy file in the common case (a full SHA-1 on line 1 of clean ASCII text), else
    None, meaning: ask :func:`parse_deploy_file`, which handles every case and explains problems."""
    head = data[:41]
    if (
        len(head) == 41
        and head[40] in _SEPARATORS
        and _SHA40.fullmatch(head, 0, 40)
        and len(data) <= MAX_DEPLOY_FILE_BYTES
        and data.isascii()
        and b"\r" not in data
        and b"\x00" not in data
    ):
        return head[:40].decode()
    return None


def sha_problem(token: str) -> str:
    """Why ``token`` is not a full lowercase commit SHA, with what to do."""
    fix = "write the full 40-character commit SHA (git rev-parse <commit>)"
    if _ANY_HEX.fullmatch(token):
        if token.lower() != token and len(token) in (40, 64):
            return f"{show(token)} has uppercase letters; write the SHA in lowercase"
        if len(token) < 40:
            return f"{show(token)} is a short SHA ({len(token)} characters); {fix}"
        return f"{show(token)} is {len(token)} hex characters, not a 40- or 64-character SHA; {fix}"
    return f"{show(token)} is not a commit SHA; {fix}"


def name_problems(path: str, env: str, app: str) -> list[Problem]:
    """Errors for env/app names in a deploy file path that are not DNS-1123 labels."""
    problems = []
    why = dns_label_problem(env)
    if why is not None:
        problems.append(
            Problem(
                path,
                None,
                f"environment folder {show(env)} {why} (it must be a DNS-1123 label); rename it",
                env=env,
                app=app,
            )
        )
    why = dns_label_problem(app)
    if why is not None:
        problems.append(
            Problem(
                path,
                None,
                f"app name {show(app)} {why} (it must be a DNS-1123 label); rename the file",
                env=env,
                app=app,
            )
        )
    return problems


def previous_shas(data: bytes) -> tuple[str, ...]:
    """The SHAs at the start of lines after the first one (the file's own history, newest first)."""
    text = data.decode("utf-8", errors="replace")
    shas = _SHA_LINE.findall(text)
    return tuple(shas[1:])
