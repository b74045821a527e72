"""The JSON Schema of deployctl.yaml, generated from the key table in :mod:`.fields`.

Editors with the YAML language server validate and complete deployctl.yaml with it (``deployctl
init`` writes the ``$schema`` line); ``deployctl validate`` checks the file against it too. The
shipped copies (deployctl/schema/ and docs/) are regenerated with ``deployctl schema``; a test
fails when they are stale.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from deployctl.model.config.fields import (
    APP,
    CHECK,
    ENVIRONMENT,
    FREEZE_CRON,
    FREEZE_DATED,
    FREEZE_RANGE,
    NAME,
    TOP,
    Key,
)
from deployctl.model.config.strict_yaml import compose_strict, node_line
from deployctl.model.config.values import CONFIG_PATH
from deployctl.model.problem import Problem

SCHEMA_ID = "https://deployctl.dev/schema/v1/deployctl.schema.json"
SCHEMA_FILE = "deployctl.schema.json"


def _object(keys: tuple[Key, ...], title: str) -> dict[str, Any]:
    return {
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "required": [k.name for k in keys if k.required],
        "properties": {k.name: k.json_schema() for k in keys},
    }


def json_schema() -> dict[str, Any]:
    """The schema document (JSON Schema draft 2020-12)."""
    top = _object(TOP, "deployctl.yaml")
    top["properties"]["apps"] |= {"propertyNames": NAME, "additionalProperties": {"$ref": "#/$defs/app"}}
    top["properties"]["environments"] |= {
        "propertyNames": NAME, "additionalProperties": {"$ref": "#/$defs/environment"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **top,
        "description": "How the apps in environments/<env>/<app>.deploy map to images and clusters "
        "(deployctl, docs/config.md).",
        "$defs": {
            "app": _object(APP, "app"),
            "environment": _object(ENVIRONMENT, "environment"),
            "check": _object(CHECK, "verification check"),
            "freeze": {"oneOf": [_object(FREEZE_DATED, "dated freeze"), _object(FREEZE_CRON, "cron freeze"),
                                 _object(FREEZE_RANGE, "weekday/time freeze")]},
        },
    }


def schema_text() -> str:
    """The schema as shipped: indented JSON with a final newline."""
    return json.dumps(json_schema(), indent=2) + "\n"


def _plain(node: Any) -> Any:
    """Composed YAML nodes as JSON data, read the way the loader reads them: keys stay names (``no:``
    is the name "no"), timestamps stay the text written."""
    if isinstance(node, yaml.MappingNode):
        return {str(k.value): _plain(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item) for item in node.value]
    tag = str(node.tag).rsplit(":", 1)[-1]
    if tag in ("int", "float", "bool", "null"):
        return yaml.safe_load(str(node.value)) if node.value else None
    return str(node.value)


def schema_problems(data: bytes, *, path: str = CONFIG_PATH) -> list[Problem]:
    """deployctl.yaml checked against the JSON Schema: one error per violation, with its key path and line.
    For a file the strict loader accepted (untrusted input is never parsed here first)."""
    import jsonschema

    root = compose_strict(data.decode("utf-8-sig"))
    if root is None:
        return []
    validator = jsonschema.Draft202012Validator(json_schema())
    problems = []
    for error in sorted(validator.iter_errors(_plain(root)), key=lambda e: list(map(str, e.absolute_path))):
        keys = [str(p) for p in error.absolute_path]
        node = root
        for key in keys:  # walk to the node for its line
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if str(k.value) == key), node)
            elif isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
                node = node.value[int(key)]
        where = ".".join(keys) or "the file"
        message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        problems.append(Problem(path, node_line(node), f"{where}: {message} (JSON Schema)"))
    return problems
