"""The ``verify:`` list of an app: checks that verify each deploy against its metrics."""

from __future__ import annotations

import math
from typing import Any

import yaml

from deployctl.model.config.fields import CHECK_KEYS
from deployctl.model.config.strict_yaml import YAML_TAG, Reader
from deployctl.model.config.values import dns_label_problem, show
from deployctl.model.duration import DurationError, parse_duration
from deployctl.model.verification import (
    ALERT,
    MAX_CHECKS,
    MAX_COUNT,
    MAX_QUERY_CHARS,
    QUERY,
    Check,
    ConditionError,
    parse_condition,
)

_EXAMPLE = ("e.g. {name: error-rate, query: 'sum(rate(http_errors_total{app=\"{app}\"}[1m]))', "
            "success: 'result < 0.01', interval: 30s, count: 5}")


def read_checks(reader: Reader, node: Any, kp: str, app: str) -> tuple[tuple[Check, ...], dict[str, list[Any]]]:
    """The checks, and the nodes of each environment name they list (checked against the environments later)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == YAML_TAG + "null":
        return (), {}
    if not isinstance(node, yaml.SequenceNode):
        reader.error(node, f"{kp}.verify must be a list of checks; {_EXAMPLE}", app=app)
        return (), {}
    if len(node.value) > MAX_CHECKS:
        reader.error(node, f"{kp}.verify has {len(node.value)} checks; the limit is {MAX_CHECKS}", app=app)
        return (), {}
    checks: list[Check] = []
    env_nodes: dict[str, list[Any]] = {}
    names: set[str] = set()
    for i, item in enumerate(node.value):
        ckp = f"{kp}.verify[{i}]"
        check = _check(reader, item, ckp, app, env_nodes)
        if check is None:
            continue
        if check.name in names:
            reader.error(item, f"{ckp}.name {show(check.name)} is used twice; give each check its own name", app=app)
            continue
        names.add(check.name)
        checks.append(check)
    return tuple(checks), env_nodes


def _check(reader: Reader, item: Any, ckp: str, app: str, env_nodes: dict[str, list[Any]]) -> Check | None:
    fields = reader.mapping(item, ckp, CHECK_KEYS, app=app)
    if fields is None:
        return None
    before = len(reader.problems)
    if "name" not in fields:
        reader.error(item, f"{ckp}.name is missing; {_EXAMPLE}", app=app)
        return None
    name = reader.string(fields["name"][1], f"{ckp}.name", required=True, app=app)
    if name is None:
        return None
    why = dns_label_problem(name)
    if why is not None:
        reader.error(fields["name"][1], f"{ckp}.name {show(name)} {why}", app=app)
    if ("query" in fields) == ("alert" in fields):
        reader.error(item, f"{ckp}: give either query (with success) or alert; {_EXAMPLE}", app=app)
        return None
    kind, text, condition = QUERY, "", None
    if "query" in fields:
        text = reader.string(fields["query"][1], f"{ckp}.query", required=True, app=app) or ""
        if len(text) > MAX_QUERY_CHARS:
            reader.error(fields["query"][1], f"{ckp}.query is {len(text)} characters; the limit is {MAX_QUERY_CHARS}",
                         app=app)
        if "success" not in fields:
            reader.error(item, f"{ckp}.success is missing; give the condition each value must meet, e.g. "
                         "'result < 0.01'", app=app)
            return None
        success = reader.string(fields["success"][1], f"{ckp}.success", required=True, app=app)
        if success is not None:
            try:
                condition = parse_condition(success)
            except ConditionError as exc:
                reader.error(fields["success"][1], f"{ckp}.success {show(success)}: {exc}", app=app)
    else:
        kind = ALERT
        text = reader.string(fields["alert"][1], f"{ckp}.alert", required=True, app=app) or ""
        if "success" in fields:
            reader.error(fields["success"][0], f"{ckp}.success goes with query, not alert (an alert check passes "
                         "while the alert is not firing)", app=app)
        if any(c in text for c in "{}\"'\\") or len(text) > 200:
            reader.error(fields["alert"][1], f"{ckp}.alert {show(text)} is not an alert name", app=app)
    interval = 30.0
    if "interval" in fields:
        interval = _seconds(reader, fields["interval"][1], f"{ckp}.interval", app) or interval
    count = 1
    if "count" in fields and "window" in fields:
        reader.error(item, f"{ckp}: give count or window, not both", app=app)
    elif "count" in fields:
        count = _integer(reader, fields["count"][1], f"{ckp}.count", app, least=1) or count
    elif "window" in fields:
        window = _seconds(reader, fields["window"][1], f"{ckp}.window", app)
        if window is not None:
            count = int(math.floor(window / interval + 1e-9)) + 1
    if count > MAX_COUNT:
        reader.error(item, f"{ckp} takes {count} measurements; the limit is {MAX_COUNT} (raise the interval)",
                     app=app)
    failure_limit = 0
    if "failure_limit" in fields:
        failure_limit = _integer(reader, fields["failure_limit"][1], f"{ckp}.failure_limit", app, least=0) or 0
        if failure_limit >= count:
            reader.error(fields["failure_limit"][1], f"{ckp}.failure_limit {failure_limit} lets every one of the "
                         f"{count} measurements fail; it must be below count", app=app)
    envs: list[str] = []
    if "environments" in fields:
        for env, env_node in reader.string_list(fields["environments"][1], f"{ckp}.environments", app=app) or []:
            envs.append(env)
            env_nodes.setdefault(env, []).append(env_node)
    if len(reader.problems) > before:
        return None
    return Check(name=name, kind=kind, query=text, condition=condition, interval_seconds=interval, count=count,
                 failure_limit=failure_limit, environments=tuple(dict.fromkeys(envs)))


def _seconds(reader: Reader, node: Any, keypath: str, app: str) -> float | None:
    text = reader.string(node, keypath, required=True, app=app)
    if text is None:
        return None
    try:
        return parse_duration(text, what=keypath).total_seconds()
    except DurationError as exc:
        reader.error(node, str(exc), app=app)
        return None


def _integer(reader: Reader, node: Any, keypath: str, app: str, *, least: int) -> int | None:
    if not (isinstance(node, yaml.ScalarNode) and node.tag == YAML_TAG + "int"):
        reader.error(node, f"{keypath} must be a whole number", app=app)
        return None
    try:
        value = int(str(node.value).replace("_", ""), 0)
    except ValueError:
        reader.error(node, f"{keypath} must be a whole number", app=app)
        return None
    if value < least:
        reader.error(node, f"{keypath} must be at least {least}", app=app)
        return None
    return value
