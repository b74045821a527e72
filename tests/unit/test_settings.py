"""Every DEPLOYCTL_* variable is defined once, in deployctl/settings.py."""

from __future__ import annotations

import re
from pathlib import Path

from deployctl import settings

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"(?<![A-Z0-9])_?DEPLOYCTL_[A-Z0-9_]*[A-Z0-9]")


def _names_used() -> dict[str, str]:
    found: dict[str, str] = {}
    files = [*ROOT.joinpath("deployctl").rglob("*.py"), *ROOT.joinpath("docs", "ci").glob("*"),
             ROOT / "README.md", ROOT / "Makefile"]
    for path in files:
        if path.is_file():
            for name in NAME.findall(path.read_text(encoding="utf-8")):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_every_variable_named_in_code_or_docs_is_a_registered_setting() -> None:
    unknown = {n: where for n, where in _names_used().items() if settings.lookup(n) is None}
    assert unknown == {}, "add these to deployctl/settings.py"


def test_allow_namespaces_splits_on_commas_and_spaces_like_the_flag() -> None:
    assert settings.split_names(["a,b c", "d", "a"]) == ["a", "b", "c", "d"]


def test_registry_host_variables_belong_to_their_family() -> None:
    assert settings.lookup("DEPLOYCTL_REGISTRY_GHCR_IO_USERNAME") is settings.REGISTRY_HOST
    assert settings.lookup("DEPLOYCTL_REGISTRY_USERNAME") is settings.REGISTRY_USERNAME
