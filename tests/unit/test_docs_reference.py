"""docs/config.md lists every command option and every DEPLOYCTL_* variable (generated, never stale)."""

from __future__ import annotations

from pathlib import Path

import click

from deployctl import settings
from deployctl.cli import main
from deployctl.cli.reference import BEGIN, END, _commands, reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_the_reference_in_docs_config_md_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
    assert block == reference(main), "run: .venv/bin/python -m deployctl.cli.reference docs/config.md"


def test_every_deployctl_variable_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [s.name for s in settings.SETTINGS if f"`{s.name}" not in text]
    assert missing == []


def test_every_option_of_every_command_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = []
    for name, command in _commands(main):
        section = text.split(f"#### `deployctl {name}", 1)[1].split("####", 1)[0] if f"#### `deployctl {name}" in text \
            else ""
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and f"`{param.opts[0]}`" not in section:
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []
