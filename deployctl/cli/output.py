"""One CLI grammar, shared by every command: output formats, ``--out FILE``, durations and name filters.

Human and machine output are two views of one result: a command builds one plain document
(dicts, lists, strings, numbers) and :class:`Output` prints it as JSON or YAML with the same
fields, or calls the command's table renderer.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import yaml

from deployctl import settings
from deployctl.model.duration import DurationError, parse_duration
from deployctl.model.printable import printable

F = TypeVar("F", bound=Callable[..., Any])

TABLE, JSON, YAML, MARKDOWN = "table", "json", "yaml", "markdown"
DATA_FORMATS = (JSON, YAML)
_ALIASES = {"text": TABLE}  # the name before one grammar; still accepted


def plain(value: Any) -> Any:
    """``value`` as plain JSON data (datetimes and other objects as strings), so JSON and YAML agree."""
    return json.loads(json.dumps(value, default=str))


def dump(value: Any, fmt: str) -> str:
    """A document as JSON (indented) or YAML (block style), keys in their order, without a trailing newline."""
    data = plain(value)
    if fmt == YAML:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")
    return json.dumps(data, indent=2)


@dataclass
class Output:
    """The output a user asked for: a format (``-o``) and where it goes (``--out FILE``, else stdout)."""

    format: str = TABLE
    path: str | None = None
    _written: bool = False

    @property
    def is_data(self) -> bool:
        return self.format in DATA_FORMATS

    def write(self, text: str) -> None:
        """Print ``text`` (one newline added) to stdout or append it to the --out file."""
        if self.path is None:
            click.echo(text)
            return
        with open(self.path, "a" if self._written else "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        self._written = True

    def lines(self, lines: Iterable[str]) -> None:
        self.write("\n".join(lines))

    def data(self, value: Any) -> bool:
        """With -o json or yaml: write ``value`` and return True. Otherwise False (render a table)."""
        if not self.is_data:
            return False
        self.write(dump(value, self.format))
        return True


class OutputOption(click.Option):
    """``-o/--output``: knows its formats, so tests and docs can walk every data command."""

    def __init__(self, *args: Any, formats: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.formats = tuple(formats)


def _deprecated(message: str) -> None:
    click.echo(f"deprecated: {message}", err=True)


def output_options(*formats: str, default: str = TABLE, legacy_file: bool = False) -> Callable[[F], F]:
    """``-o/--output FORMAT`` and ``--out FILE``; the command receives one ``output: Output``.

    With ``legacy_file`` an ``-o`` value that is not a format is the file of the old grammar
    (``timeline -o deploys.html``): it still works, with a deprecation warning.
    """
    choices = list(formats)

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, output: str | None, out: str | None, **kwargs: Any) -> Any:
            fmt = _ALIASES.get(output or default, output or default)
            path = out
            if fmt not in choices:
                if not legacy_file:
                    raise click.BadParameter(
                        f"{output!r} is not one of {', '.join(choices)}", param_hint="'-o' / '--output'"
                    )
                if path is not None:
                    raise click.UsageError("give the file with --out only")
                _deprecated(f"-o/--output FILE; write --out {output}")
                fmt, path = default, output
            return f(*args, output=Output(fmt, None if path == "-" else path), **kwargs)

        click.option("--out", "out", metavar="FILE", default=None, type=click.Path(dir_okay=False),
                     help="Write the output to FILE instead of stdout.")(wrapper)
        click.option("--output", "-o", "output", cls=OutputOption, formats=choices, default=None,
                     metavar="|".join(choices),
                     shell_complete=lambda ctx, param, incomplete: [c for c in choices if c.startswith(incomplete)],
                     help=f"Output format: {', '.join(choices)} [default: {default}].")(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


# -- durations ----------------------------------------------------------------------------------


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """``90s``, ``10m``, ``1h30m``, ``2d``, ``1w`` or a bare number of seconds; converted to seconds."""

    name = "duration"

    def __init__(self, *, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        what = param.opts[0] if param is not None and param.opts else "duration"
        try:
            return parse_duration(str(value), what=what, allow_zero=self.allow_zero).total_seconds()
        except DurationError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"


def duration_option(*decls: str, default: str, help: str, allow_zero: bool = False) -> Callable[[F], F]:
    return click.option(*decls, type=Duration(allow_zero=allow_zero), default=default, show_default=True,
                        help=f"{help} (e.g. 90s, 10m, 1h30m; a bare number is seconds)")


# -- names ---------------------------------------------------------------------------------------


def _split(ctx: click.Context, param: click.Parameter, value: Sequence[str] | None) -> tuple[str, ...]:
    return tuple(settings.split_names(value or ()))


def names_option(decl: str, dest: str, *, metavar: str, help: str,
                 complete: Callable[..., list[Any]] | None = None, **extra: Any) -> Callable[[F], F]:
    """A repeatable filter whose values may also be comma-separated: ``--env a,b --env c``."""
    return click.option(decl, dest, multiple=True, metavar=metavar, callback=_split, shell_complete=complete,
                        help=f"{help} (repeatable, or comma-separated).", **extra)


def echo_json(value: Any) -> None:
    click.echo(dump(value, JSON))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table; control characters in cells are escaped."""
    cells = [[str(h) for h in headers]] + [[("" if c is None else printable(str(c))) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def hoist_global_options(args: list[str], names: Sequence[str]) -> list[str]:
    """Move global options (``--log-level debug``) found after the subcommand to the front,
    so they work anywhere on the line. Arguments after ``--`` are left alone."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if name in names and i > 0:
            if "=" in arg:
                front.append(arg)
            else:
                front.extend(args[i : i + 2])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
