"""CODEOWNERS entries generated from each environment's ``approvers``. Pure: text in, text out.

The generated lines live between two marker comments, so the rest of a hand-written
CODEOWNERS file is left alone; ``--check`` compares only that block.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployctl.model.config import CONFIG_PATH, Config

GITHUB = "github"
GITLAB = "gitlab"
FORMATS = (GITHUB, GITLAB)
BEGIN = "# BEGIN deployctl: generated from deployctl.yaml by `deployctl codeowners --write`; do not edit"
END = "# END deployctl"

DEFAULT_PATHS = {GITHUB: ".github/CODEOWNERS", GITLAB: ".gitlab/CODEOWNERS"}
CANDIDATE_PATHS = {
    GITHUB: (".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"),
    GITLAB: (".gitlab/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"),
}


@dataclass(frozen=True)
class Entry:
    """One CODEOWNERS rule: a path pattern and who must review changes to it."""

    pattern: str
    owners: tuple[str, ...]

    def line(self) -> str:
        return f"{self.pattern} {' '.join(self.owners)}"


def entries(config: Config) -> list[Entry]:
    """One rule per environment with approvers, plus deployctl.yaml owned by every approver.

    deployctl.yaml decides who approves and which gates apply, so changing it needs the same
    reviewers as the environments it protects.
    """
    out: list[Entry] = []
    everyone: dict[str, None] = {}
    for name in sorted(config.environments):
        approvers = config.environments[name].approvers
        if not approvers:
            continue
        out.append(Entry(f"/environments/{name}/", approvers))
        everyone.update(dict.fromkeys(approvers))
    if everyone:
        out.append(Entry(f"/{CONFIG_PATH}", tuple(everyone)))
    return out


def render_block(config: Config, fmt: str = GITHUB) -> str:
    """The generated block, markers included, ending with a newline."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown CODEOWNERS format {fmt!r}")
    lines = [BEGIN]
    rules = entries(config)
    if fmt == GITLAB and rules:
        # A required section: merge requests touching these paths need one of the owners' approval.
        lines.append("[deployctl]")
    lines.extend(e.line() for e in rules)
    lines.append(END)
    return "\n".join(lines) + "\n"


def extract_block(text: str) -> str | None:
    """The generated block in a CODEOWNERS file's text (markers included), or None if it has none."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN), None)
    if start is None:
        return None
    for end in range(start + 1, len(lines)):
        if lines[end].rstrip("\r\n") == END:
            return "".join(line.rstrip("\r\n") + "\n" for line in lines[start : end + 1])
    return "".join(line.rstrip("\r\n") + "\n" for line in lines[start:])


def replace_block(text: str, block: str) -> str:
    """``text`` with its generated block replaced by ``block`` (appended at the end when absent).

    Appending at the end matters for GitLab: a section runs until the next one, so hand-written
    rules after a [deployctl] section would join it.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN), None)
    if start is None:
        prefix = text if not text or text.endswith("\n") else text + "\n"
        return prefix + ("\n" if prefix else "") + block
    end = next((j for j in range(start + 1, len(lines)) if lines[j].rstrip("\r\n") == END), len(lines) - 1)
    return "".join(lines[:start]) + block + "".join(lines[end + 1 :])


def is_current(text: str | None, config: Config, fmt: str = GITHUB) -> bool:
    """Whether a CODEOWNERS file's generated block matches what deployctl.yaml asks for."""
    return text is not None and extract_block(text) == render_block(config, fmt)
