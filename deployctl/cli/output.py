"""Shared CLI options and renderers. Human and machine output are two views of one result."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from deployctl.model.printable import printable

F = TypeVar("F", bound=Callable[..., Any])


def output_option(*choices: str, default: str = "text") -> Callable[[F], F]:
    """``--output/-o`` with the given formats."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help="Output format.",
    )


def repo_option(f: F) -> F:
    return click.option(
        "--repo",
        default=".",
        show_default=True,
        type=click.Path(file_okay=False),
        help="Path to the deploy repo (bare or with a work tree).",
    )(f)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned text table; control characters in cells are escaped."""
    cells = [[str(h) for h in headers]] + [[("" if c is None else printable(str(c))) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)
