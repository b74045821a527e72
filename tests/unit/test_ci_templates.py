"""The CI templates in docs/ci install deployctl from a pinned git commit, never by name from an index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

DOCS_CI = Path(__file__).resolve().parents[2] / "docs" / "ci"
_PINNED = 'pip install "deployctl[postgres] @ git+${DEPLOYCTL_GIT}@${DEPLOYCTL_COMMIT}"'


def _commands(node: object) -> list[str]:
    """Every shell command in a workflow or pipeline: `run:` values and `script`-like lists."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if key in ("run", "script", "before_script", "after_script"):
                found += [value] if isinstance(value, str) else [str(v) for v in value]
            else:
                found += _commands(value)
        return found
    if isinstance(node, list):
        return [c for item in node for c in _commands(item)]
    return []


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml", "gitea-actions.yml"])
def test_every_install_is_from_a_pinned_commit_checked_to_be_a_full_sha(name: str) -> None:
    doc = yaml.safe_load((DOCS_CI / name).read_text())
    commands = _commands(doc)
    installs = [c for c in commands if "pip install" in c]
    assert installs, f"{name} installs nothing"
    for command in installs:
        pip_lines = [line.strip() for line in command.splitlines() if "pip install" in line]
        assert pip_lines == [_PINNED], pip_lines
    assert any("[0-9a-f]{40}" in c for c in commands), "the commit must be checked to be a full SHA"
    assert re.search(r"DEPLOYCTL_COMMIT: [0-9a-f]{40}", (DOCS_CI / name).read_text())
