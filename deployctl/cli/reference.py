"""The options and environment variables reference in docs/config.md, generated from the click
command tree and :mod:`deployctl.settings` (a test fails when the doc is stale).

Regenerate with: ``.venv/bin/python -m deployctl.cli.reference docs/config.md``
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from deployctl import settings

BEGIN = "<!-- BEGIN generated reference: python -m deployctl.cli.reference docs/config.md -->"
END = "<!-- END generated reference -->"


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option_row(param: click.Option) -> str:
    names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    default = "" if param.default in (None, (), False) or param.is_flag else f"`{param.default}`"
    env = f" (env `{param.envvar}`)" if isinstance(param.envvar, str) else ""
    return f"| {names} | {default} | {_cell(param.help or '')}{env} |"


def reference(main: click.Command) -> str:
    """The generated markdown: one table of options per command, then every environment variable."""
    lines = [BEGIN, "", "### Options of every command", "",
             "Global: `--log-level debug|info|warning|error` (before or after the subcommand; env "
             "`DEPLOYCTL_LOG_LEVEL`), `--version`, `-h/--help`.", ""]
    for name, command in _commands(main):
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        arguments = [p for p in command.params if isinstance(p, click.Argument)]
        args = "".join(f" {a.human_readable_name}" for a in arguments)
        lines += [f"#### `deployctl {name}{args}`", "", _cell((command.help or "").split("\n\n")[0]), ""]
        if options:
            lines += ["| Option | Default | Meaning |", "|---|---|---|", *(_option_row(o) for o in options), ""]
    lines += ["### Environment variables", "", "| Variable | Default | Meaning |", "|---|---|---|"]
    for setting in settings.SETTINGS:
        name = f"{setting.name}<HOST>_USERNAME`, `{setting.name}<HOST>_PASSWORD" if setting.family else setting.name
        secret = " Secret: never logged." if setting.secret else ""
        lines.append(f"| `{name}` | {_cell(setting.default) or 'unset'} | {_cell(setting.meaning)}{secret} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def with_reference(text: str, block: str) -> str:
    """``text`` with the generated block replaced (or appended when it has none)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + block.rstrip("\n") + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + block


if __name__ == "__main__":  # pragma: no cover
    from deployctl.cli import main as cli_main

    target = Path(sys.argv[1])
    target.write_text(with_reference(target.read_text(encoding="utf-8"), reference(cli_main)), encoding="utf-8")
