"""Loading deployctl.yaml: bytes in, a typed :class:`Config` and every problem (with its line) out.

The YAML is untrusted (it arrives in pull requests), so it is read with a strict loader: a size
limit, no anchors or aliases, no custom tags, a nesting limit and no duplicate keys. Every
problem carries the line it was found on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from deployctl.model.config.environments import read_environments
from deployctl.model.config.fields import APP_KEYS, TOP_KEYS
from deployctl.model.config.strict_yaml import (
    YAML_TAG,
    Reader,
    Rejected,
    Who,
    compose_strict,
    decode_text,
    node_line,
)
from deployctl.model.config.values import (
    CONFIG_PATH,
    CONFIG_VERSION,
    IMAGE_REPOSITORY,
    IMAGE_TAG,
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    PIN_MODES,
    PRE_DEPLOY,
    AppConfig,
    Config,
    EnvironmentConfig,
    dns_label_problem,
    find_cycle,
    show,
)
from deployctl.model.config.verify import read_checks
from deployctl.model.problem import WARNING, Problem
from deployctl.model.verification import Check


def load_config(
    data: bytes, *, path: str = CONFIG_PATH, max_bytes: int = MAX_CONFIG_BYTES
) -> tuple[Config | None, list[Problem]]:
    """Parse and validate deployctl.yaml. Returns the config (None if unusable) and every problem found.

    Apps and environments with errors are left out of the returned config and listed in
    ``Config.invalid_apps`` / ``Config.invalid_environments``.
    """
    reader = Reader(path)
    if len(data) > max_bytes:
        reader.problems.append(
            Problem(path, None, f"is {len(data)} bytes; the limit is {max_bytes} bytes")
        )
        return None, reader.problems
    text, bad_line, message = decode_text(data, what="deployctl.yaml")
    if text is None:
        reader.problems.append(Problem(path, bad_line, message or "cannot be read"))
        return None, reader.problems
    if text.startswith("\ufeff"):
        reader.problems.append(
            Problem(path, 1, "starts with a byte-order mark (BOM); save it as UTF-8 without BOM", WARNING)
        )
        text = text[1:]
    try:
        root = compose_strict(text)
    except Rejected as exc:
        reader.problems.append(Problem(path, exc.line, exc.message))
        return None, reader.problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else int(mark.line) + 1
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        if "nesting depth" in what:  # PyYAML >= 6.0.4 stops deep flow nesting itself, before our own check
            what = f"YAML is nested more than {MAX_YAML_DEPTH} levels deep"
            reader.problems.append(Problem(path, line, what))
            return None, reader.problems
        reader.problems.append(Problem(path, line, f"is not valid YAML: {what}"))
        return None, reader.problems
    except yaml.YAMLError as exc:
        reader.problems.append(Problem(path, None, f"is not valid YAML: {_oneline(str(exc))}"))
        return None, reader.problems
    except RecursionError:
        reader.problems.append(Problem(path, None, "YAML is nested too deeply"))
        return None, reader.problems
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == YAML_TAG + "null"):
        reader.problems.append(Problem(path, None, "is empty; it needs 'version: 1', apps and environments"))
        return None, reader.problems
    top = reader.mapping(root, "", TOP_KEYS)
    if top is None:
        return None, reader.problems
    version = _version(reader, root, top)
    if version is None:
        return None, reader.problems
    lines: dict[str, int] = {}
    apps, invalid_apps, check_envs = _apps(reader, top.get("apps"), root, lines)
    envs, invalid_envs = read_environments(reader, top.get("environments"), root, lines)
    for (app, env), nodes in sorted(check_envs.items()):
        if env not in envs and env not in invalid_envs:
            for node in nodes:
                reader.error(node, f"apps.{app}.verify names unknown environment {show(env)}; add it under "
                             "environments or remove it", app=app)
            apps.pop(app, None)
            invalid_apps.add(app)
    _unverifiable(reader, apps, envs, lines)
    config = Config(
        version=version,
        apps=apps,
        environments=envs,
        path=path,
        invalid_apps=frozenset(invalid_apps),
        invalid_environments=frozenset(invalid_envs),
        lines=lines,
    )
    return config, reader.problems


def _unverifiable(reader: Reader, apps: Mapping[str, AppConfig], envs: Mapping[str, EnvironmentConfig],
                  lines: Mapping[str, int]) -> None:
    """A warning for each app a ``require_verified`` environment could never accept: it has no ``verify``
    check in a required environment, so no SHA of it is ever verified there."""
    for env_name, env in sorted(envs.items()):
        if not env.require_verified:
            continue
        for required in env.requires:
            for app_name, app in sorted(apps.items()):
                if any(not c.environments or required in c.environments for c in app.verify):
                    continue
                reader.problems.append(Problem(
                    reader.path, lines.get(f"apps.{app_name}") or None,
                    f"apps.{app_name} has no verify check in {required}, and environments.{env_name} "
                    f"requires SHAs verified there (require_verified): every SHA of {app_name} will be refused "
                    f"in {env_name}; add a check that runs in {required}", WARNING, env=env_name, app=app_name))


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _version(reader: Reader, root: Any, top: dict[str, tuple[Any, Any]]) -> int | None:
    if "version" not in top:
        reader.error(root, f"missing 'version: {CONFIG_VERSION}' at the top; add it")
        return None
    _, node = top["version"]
    if not (isinstance(node, yaml.ScalarNode) and node.tag == YAML_TAG + "int"):
        reader.error(node, f"version must be the number {CONFIG_VERSION}")
        return None
    try:
        value = int(str(node.value).replace("_", ""), 0)
    except ValueError:
        value = -1
    if value != CONFIG_VERSION:
        reader.error(
            node, f"version {show(str(node.value))} is not supported; this deployctl reads version 1"
        )
        return None
    return value


def _apps(
    reader: Reader, entry: tuple[Any, Any] | None, root: Any, lines: dict[str, int]
) -> tuple[dict[str, AppConfig], set[str], dict[tuple[str, str], list[Any]]]:
    if entry is None:
        reader.error(root, "missing 'apps:'; list the apps this repo deploys")
        return {}, set(), {}
    entries = reader.mapping(entry[1], "apps", None)
    if entries is None:
        return {}, set(), {}
    apps: dict[str, AppConfig] = {}
    invalid: set[str] = set()
    check_envs: dict[tuple[str, str], list[Any]] = {}
    deps_nodes: dict[str, list[tuple[str, Any]]] = {}
    for name, (key_node, node) in entries.items():
        lines[f"apps.{name}"] = node_line(key_node) or 0
        before = len(reader.problems)
        why = dns_label_problem(name)
        if why is not None:
            reader.error(key_node, f"app name {show(name)} {why} (it must be a Kubernetes DNS-1123 label)")
            invalid.add(name)
            continue
        app = _app(reader, name, node, lines, check_envs)
        if app is None or len(reader.problems) > before:
            invalid.add(name)
            continue
        apps[name] = app[0]
        deps_nodes[name] = app[1]
    # depends_on: known names, no self-reference, no cycles
    for name, deps in deps_nodes.items():
        for dep, dep_node in deps:
            if dep == name:
                reader.error(
                    dep_node, f"app {show(name)} depends on itself; remove it from depends_on", app=name
                )
                invalid.add(name)
            elif dep not in entries:
                reader.error(
                    dep_node,
                    f"apps.{name}.depends_on names unknown app {show(dep)}; add it under apps or remove it",
                    app=name,
                )
                invalid.add(name)
    graph = {name: app.depends_on for name, app in apps.items()}
    cycle = find_cycle(graph)
    while cycle is not None:
        first = cycle[0]
        node = next(n for d, n in deps_nodes[first] if d == cycle[1])
        reader.error(
            node, f"depends_on cycle: {' -> '.join(cycle)}; remove one of these dependencies", app=first
        )
        invalid.update(cycle)
        for member in cycle:
            graph.pop(member, None)
        cycle = find_cycle(graph)
    return {k: v for k, v in apps.items() if k not in invalid}, invalid, check_envs


def _app(
    reader: Reader, name: str, node: Any, lines: dict[str, int], check_envs: dict[tuple[str, str], list[Any]]
) -> tuple[AppConfig, list[tuple[str, Any]]] | None:
    kp = f"apps.{name}"
    who: Who = {"app": name}
    fields = reader.mapping(node, kp, APP_KEYS, **who)
    if fields is None:
        return None
    if "image" not in fields:
        reader.error(
            node, f"{kp}.image is missing; give the image repository, e.g. registry.example.com/{name}"
        )
        return None
    image = reader.string(fields["image"][1], f"{kp}.image", required=True, **who)
    if image is None:
        return None
    if IMAGE_REPOSITORY.fullmatch(image) is None:
        if "@" in image or ":" in image.rsplit("/", 1)[-1]:
            reader.error(
                fields["image"][1],
                f"{kp}.image {show(image)} has a tag or digest; give the repository only "
                "(the tag comes from 'tag')",
                **who,
            )
        else:
            reader.error(
                fields["image"][1], f"{kp}.image {show(image)} is not a valid image repository", **who
            )
    tag = "{sha}"
    if "tag" in fields:
        tag = reader.string(fields["tag"][1], f"{kp}.tag", required=True, **who) or tag
        if "{sha}" not in tag and "{short_sha}" not in tag:
            reader.error(
                fields["tag"][1], f"{kp}.tag {show(tag)} must contain {{sha}} or {{short_sha}}", **who
            )
        else:
            sample = tag.replace("{sha}", "a" * 64).replace("{short_sha}", "a" * 12)
            if IMAGE_TAG.fullmatch(sample) is None:
                reader.error(
                    fields["tag"][1],
                    f"{kp}.tag {show(tag)} does not make a valid image tag "
                    "(letters, digits, '_', '.', '-'; at most 128 characters; only {sha} and {short_sha} are "
                    "substituted)",
                    **who,
                )
    container = name
    if "container" in fields:
        container = reader.string(fields["container"][1], f"{kp}.container", required=True, **who) or name
        why = dns_label_problem(container)
        if why is not None:
            reader.error(fields["container"][1], f"{kp}.container {show(container)} {why}", **who)
    source = None
    if "source" in fields:
        source = reader.string(fields["source"][1], f"{kp}.source", **who)
        lines[f"{kp}.source"] = node_line(fields["source"][1]) or 0
        if source is not None and any(c < " " or c == "\x7f" for c in source):
            # a NUL (or any control character) is in no path or URL; the OS would refuse it later
            reader.error(fields["source"][1], f"{kp}.source {show(source)} contains a control character; "
                         "write a path or a URL", **who)
    deps: list[tuple[str, Any]] = []
    if "depends_on" in fields:
        deps = reader.string_list(fields["depends_on"][1], f"{kp}.depends_on", **who) or []
    pin = "digest"
    if "pin" in fields:
        pin = reader.string(fields["pin"][1], f"{kp}.pin", required=True, **who) or pin
        if pin not in PIN_MODES:
            reader.error(fields["pin"][1], f"{kp}.pin {show(pin)} must be 'digest' or 'tag'", **who)
    commit_url = None
    if "commit_url" in fields:
        commit_url = reader.string(fields["commit_url"][1], f"{kp}.commit_url", required=True, **who)
        if commit_url is not None and (
            not commit_url.startswith(("https://", "http://")) or "{sha}" not in commit_url.replace(
                "{short_sha}", "{sha}") or any(c.isspace() or c in "\"'<>" for c in commit_url)
        ):
            reader.error(fields["commit_url"][1], f"{kp}.commit_url {show(commit_url)} must be an http(s) URL "
                         "containing {sha} or {short_sha}, e.g. https://github.com/acme/web/commit/{sha}", **who)
    owner = None
    if "owner" in fields:
        owner = reader.string(fields["owner"][1], f"{kp}.owner", required=True, **who)
    pre_deploy = None
    if "pre_deploy" in fields:
        pre_deploy = reader.string(fields["pre_deploy"][1], f"{kp}.pre_deploy", required=True, **who)
        if pre_deploy is not None and PRE_DEPLOY.fullmatch(pre_deploy) is None:
            reader.error(fields["pre_deploy"][1], f"{kp}.pre_deploy {show(pre_deploy)} must be job/<name> or "
                         "cronjob/<name> (a Job or suspended CronJob in the app's namespace)", **who)
            pre_deploy = None
    checks: tuple[Check, ...] = ()
    if "verify" in fields:
        checks, env_nodes = read_checks(reader, fields["verify"][1], kp, name)
        check_envs.update({(name, env): nodes for env, nodes in env_nodes.items()})
    unique: list[tuple[str, Any]] = []
    for dep, dep_node in deps:
        if any(dep == d for d, _ in unique):
            reader.error(dep_node, f"{kp}.depends_on lists {show(dep)} twice", **who)
        else:
            unique.append((dep, dep_node))
    app = AppConfig(
        name=name,
        image=image,
        tag=tag,
        container=container,
        source=source,
        depends_on=tuple(d for d, _ in unique),
        pin=pin,
        commit_url=commit_url,
        owner=owner,
        verify=checks,
        pre_deploy=pre_deploy,
    )
    return app, unique
