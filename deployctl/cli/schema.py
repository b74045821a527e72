"""`deployctl schema`: the JSON Schema of deployctl.yaml, for editors and CI."""

from __future__ import annotations

import click

from deployctl.cli.output import JSON, YAML, Output, output_options


@click.command()
@output_options(JSON, YAML, default=JSON)
def schema(output: Output) -> None:
    """Print the JSON Schema of deployctl.yaml (generated from the config model).

    deployctl init puts a `# yaml-language-server: $schema=...` line in deployctl.yaml, so
    editors with the YAML language server validate and complete it; validate checks it too.

    \b
    Example:
      deployctl schema --out deployctl.schema.json
    """
    from deployctl.model.config.schema import json_schema

    output.data(json_schema())
