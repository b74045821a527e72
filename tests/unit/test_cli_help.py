"""`deployctl --help` lists every command from a table, without importing the commands."""

from __future__ import annotations

import subprocess
import sys

import click

from deployctl.cli import COMMANDS, SUMMARIES, main


def test_each_summary_is_the_commands_own_short_help():
    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None, name
        assert SUMMARIES[name] == command.get_short_help_str(200), name


def test_help_lists_every_command_without_loading_the_kubernetes_client_or_aiohttp():
    code = ("import sys; from click.testing import CliRunner; from deployctl.cli import main; "
            "out = CliRunner().invoke(main, ['--help']).output; "
            "print(sorted(m for m in ('kubernetes', 'aiohttp', 'plotly', 'psycopg', 'pygit2') if m in sys.modules)); "
            "print(out)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, _, help_text = result.stdout.partition("\n")
    assert loaded == "[]"
    for name in COMMANDS:
        assert f"  {name} " in help_text, name
