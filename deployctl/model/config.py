"""deployctl.yaml: how apps map to images and environments to clusters. Pure: bytes in, typed values out.

The YAML is untrusted (it arrives in pull requests), so it is read with a strict loader: a size
limit, no anchors or aliases, no custom tags, a nesting limit and no duplicate keys. Every
problem carries the line it was found on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict, Unpack

import yaml

from deployctl.model.problem import ERROR, WARNING, Problem

CONFIG_PATH = "deployctl.yaml"
CONFIG_VERSION = 1
MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 16

DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
# An image repository without tag or digest: [registry[:port]/]path, path components lowercase.
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REPOSITORY = re.compile(
    rf"(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?{_IMAGE_PATH}(?:/{_IMAGE_PATH})*"
)
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
APPROVER = re.compile(
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:/[A-Za-z0-9._-]+)?|[^@\s]+@[^@\s]+\.[^@\s]+"
)
PIN_MODES = ("digest", "tag")

TOP_KEYS = ("version", "apps", "environments")
APP_KEYS = ("image", "tag", "container", "source", "depends_on", "pin", "commit_url", "owner")
ENV_KEYS = ("namespace", "context", "requires", "approvers", "require_approval", "freeze")
FREEZE_KEYS = ("start", "end", "reason", "weekly")

_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset(
    _TAG + t for t in ("str", "int", "bool", "null", "float", "timestamp", "map", "seq")
)


def is_dns_label(name: str) -> bool:
    """A Kubernetes DNS-1123 label: lowercase alphanumerics and '-', 1-63 chars, alphanumeric at both ends."""
    return DNS_LABEL.fullmatch(name) is not None


def dns_label_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 label, or None when it is one."""
    if is_dns_label(name):
        return None
    if not name:
        return "is empty"
    if len(name) > 63:
        return f"is {len(name)} characters long; the limit is 63"
    if name.lower() != name and is_dns_label(name.lower()):
        return "has uppercase letters; use lowercase"
    return "may only contain lowercase letters, digits and '-', and must start and end with a letter or digit"


def show(value: str, limit: int = 60) -> str:
    """A value quoted for an error message: control characters escaped, long values cut."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


@dataclass(frozen=True)
class FreezeWindow:
    """A period in which nothing may be deployed to an environment. Times are tz-aware UTC.

    With ``weekly`` the window repeats every 7 days from ``start`` (for example every Friday
    18:00 to Monday 06:00); ``end - start`` is then at most 7 days.
    """

    start: datetime
    end: datetime
    reason: str
    weekly: bool = False

    def active(self, at: datetime) -> bool:
        """Whether the window covers the instant ``at`` (tz-aware)."""
        if at < self.start:
            return False
        if not self.weekly:
            return at < self.end
        return (at - self.start) % timedelta(days=7) < self.end - self.start


@dataclass(frozen=True)
class AppConfig:
    """How one app's commits become images, and which container runs them."""

    name: str
    image: str
    tag: str = "{sha}"
    container: str = ""  # defaults to name
    source: str | None = None
    depends_on: tuple[str, ...] = ()
    pin: str = "digest"  # "digest" | "tag"
    commit_url: str | None = None  # e.g. "https://github.com/acme/web/commit/{sha}", for links to a commit
    owner: str | None = None  # the team or person who owns the app (shown and filtered on in the dashboard)

    def __post_init__(self) -> None:
        if not self.container:
            object.__setattr__(self, "container", self.name)

    def image_tag(self, sha: str) -> str:
        return self.tag.replace("{sha}", sha).replace("{short_sha}", sha[:12])

    def image_ref(self, sha: str) -> str:
        """The image reference for a commit: ``<image>:<tag>`` with {sha} and {short_sha} filled in."""
        return f"{self.image}:{self.image_tag(sha)}"

    def commit_link(self, sha: str) -> str | None:
        """The web page of an app commit from ``commit_url`` ({sha}, {short_sha} filled in), if configured."""
        if not self.commit_url:
            return None
        return self.commit_url.replace("{sha}", sha).replace("{short_sha}", sha[:12])


@dataclass(frozen=True)
class EnvironmentConfig:
    """Where an environment runs and which gates guard it."""

    name: str
    namespace: str
    context: str | None = None
    requires: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    require_approval: bool = False
    freeze: tuple[FreezeWindow, ...] = ()

    def frozen_at(self, at: datetime) -> FreezeWindow | None:
        """The first freeze window active at ``at``, if any."""
        for window in self.freeze:
            if window.active(at):
                return window
        return None


@dataclass(frozen=True)
class Config:
    """A parsed deployctl.yaml. Entries with errors are left out and named in ``invalid_*``."""

    version: int
    apps: Mapping[str, AppConfig]
    environments: Mapping[str, EnvironmentConfig]
    path: str = CONFIG_PATH
    invalid_apps: frozenset[str] = field(default=frozenset())
    invalid_environments: frozenset[str] = field(default=frozenset())
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # "apps.web" -> line


# --- strict YAML --------------------------------------------------------------------------------


class _Who(TypedDict, total=False):
    env: str | None
    app: str | None


class _Rejected(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# libyaml when present: the pure-Python parser takes ~0.5 s on a 3,000-app config.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _compose(text: str) -> Any:
    """Compose one YAML document into nodes (with line marks) from the parser's event stream.

    Aliases, anchors, non-standard tags, several documents and deep nesting are refused as
    they stream past, before any of them can cost memory; the stack is explicit, so no input
    can exhaust the recursion limit.
    """
    resolver = yaml.resolver.Resolver()
    stack: list[Any] = []  # open collection nodes; a mapping's pending key is kept after it
    pending_keys: list[Any] = []
    root: Any = None
    documents = 0
    event: Any
    for event in yaml.parse(text, Loader=_Loader):
        kind = type(event)
        if kind is yaml.AliasEvent:
            raise _Rejected(
                _event_line(event), "YAML aliases (*name) are not allowed; write the value out in full"
            )
        if kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Rejected(_event_line(event), "holds more than one YAML document (---); keep one")
            continue
        if kind in (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent):
            continue
        if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            node = stack.pop()
            node.end_mark = event.end_mark
            if kind is yaml.MappingEndEvent:
                pending_keys.pop()
            if not stack:
                root = node
            continue
        if event.anchor is not None:
            raise _Rejected(
                _event_line(event), "YAML anchors (&name) are not allowed; write the value out in full"
            )
        tag = event.tag
        if tag is not None and tag != "!" and tag not in _ALLOWED_TAGS:
            raise _Rejected(_event_line(event), f"YAML tag {show(str(tag))} is not allowed; remove it")
        if kind is yaml.ScalarEvent:
            if tag is None or tag == "!":
                tag = resolver.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
            if stack:
                _attach(stack, pending_keys, node)
            else:
                root = node
            continue
        if len(stack) >= MAX_YAML_DEPTH:
            raise _Rejected(_event_line(event), f"YAML is nested more than {MAX_YAML_DEPTH} levels deep")
        is_mapping = kind is yaml.MappingStartEvent
        node = (yaml.MappingNode if is_mapping else yaml.SequenceNode)(
            _TAG + ("map" if is_mapping else "seq"), [], event.start_mark, None
        )
        if tag is not None and tag != "!" and tag != node.tag:
            raise _Rejected(
                _event_line(event), f"YAML tag {show(str(tag))} does not fit a collection; remove it"
            )
        if stack:
            _attach(stack, pending_keys, node)
        stack.append(node)
        if is_mapping:
            pending_keys.append(None)
    return root


def _event_line(event: Any) -> int | None:
    mark = event.start_mark
    return None if mark is None else int(mark.line) + 1


def _attach(stack: list[Any], pending_keys: list[Any], node: Any) -> None:
    """Put a finished or just-opened node into its parent (a list item, a key, or a key's value)."""
    if not stack:
        return
    parent = stack[-1]
    if isinstance(parent, yaml.SequenceNode):
        parent.value.append(node)
    elif pending_keys[-1] is None:
        pending_keys[-1] = node
    else:
        parent.value.append((pending_keys[-1], node))
        pending_keys[-1] = None


def decode_text(data: bytes, *, what: str) -> tuple[str | None, int | None, str | None]:
    """Decode untrusted UTF-8 text. Returns (text, None, None) or (None, line, message)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None, 1, f"{what} is UTF-16 encoded; save it as UTF-8"
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        return None, line, f"{what} contains a NUL byte; it must be plain UTF-8 text"
    try:
        return data.decode("utf-8"), None, None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, line, f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8"


# --- schema -------------------------------------------------------------------------------------


class _Reader:
    """Walks the composed YAML nodes, turning them into values and problems with line numbers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def error(self, node: Any, message: str, *, env: str | None = None, app: str | None = None) -> None:
        self.problems.append(Problem(self.path, _line(node), message, ERROR, env=env, app=app))

    def warn(self, node: Any, message: str) -> None:
        self.problems.append(Problem(self.path, _line(node), message, WARNING))

    def mapping(
        self, node: Any, keypath: str, allowed: tuple[str, ...] | None, **who: Unpack[_Who]
    ) -> dict[str, tuple[Any, Any]] | None:
        """A mapping's entries by key; unknown keys (when ``allowed`` is given) and duplicates are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{keypath or 'the file'} must be a mapping (key: value lines)", **who)
            return None
        out: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _TAG + "null":
                self.error(key_node, f"{keypath} has a key that is not a plain name", **who)
                continue
            key = str(key_node.value)
            child = f"{keypath}.{key}" if keypath else key
            if key in out:
                self.error(key_node, f"{child} is given twice; keep one", **who)
                continue
            if allowed is not None and key not in allowed:
                self.error(key_node, f"unknown key {show(child)}; allowed here: {', '.join(allowed)}", **who)
                continue
            out[key] = (key_node, value_node)
        return out

    def string(self, node: Any, keypath: str, *, required: bool = False, **who: Unpack[_Who]) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null":
            if required:
                self.error(node, f"{keypath} is empty; give a value", **who)
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{keypath} must be a single value, not a list or mapping", **who)
            return None
        value = str(node.value)
        if required and not value.strip():
            self.error(node, f"{keypath} is empty; give a value", **who)
            return None
        return value

    def boolean(self, node: Any, keypath: str, **who: Unpack[_Who]) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "bool":
            return str(node.value).lower() in ("true", "yes", "on", "y")
        self.error(node, f"{keypath} must be true or false", **who)
        return None

    def string_list(self, node: Any, keypath: str, **who: Unpack[_Who]) -> list[tuple[str, Any]] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null":
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{keypath} must be a list, for example [a, b]", **who)
            return None
        items: list[tuple[str, Any]] = []
        for i, item in enumerate(node.value):
            value = self.string(item, f"{keypath}[{i}]", required=True, **who)
            if value is not None:
                items.append((value, item))
        return items


def _line(node: Any) -> int | None:
    mark = getattr(node, "start_mark", None)
    return None if mark is None else int(mark.line) + 1


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 instant with a timezone (or a bare date, taken as 00:00 UTC), converted to UTC."""
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """One cycle in a name -> dependencies graph as [a, b, ..., a], or None. Iterative (no recursion)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(graph.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return None


def load_config(data: bytes, *, path: str = CONFIG_PATH) -> tuple[Config | None, list[Problem]]:
    """Parse and validate deployctl.yaml. Returns the config (None if unusable) and every problem found.

    Apps and environments with errors are left out of the returned config and listed in
    ``Config.invalid_apps`` / ``Config.invalid_environments``.
    """
    reader = _Reader(path)
    if len(data) > MAX_CONFIG_BYTES:
        reader.problems.append(
            Problem(path, None, f"is {len(data)} bytes; the limit is {MAX_CONFIG_BYTES} bytes")
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
        root = _compose(text)
    except _Rejected as exc:
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
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _TAG + "null"):
        reader.problems.append(Problem(path, None, "is empty; it needs 'version: 1', apps and environments"))
        return None, reader.problems
    top = reader.mapping(root, "", TOP_KEYS)
    if top is None:
        return None, reader.problems
    version = _version(reader, root, top)
    if version is None:
        return None, reader.problems
    lines: dict[str, int] = {}
    apps, invalid_apps = _apps(reader, top.get("apps"), root, lines)
    envs, invalid_envs = _environments(reader, top.get("environments"), root, lines)
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


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _version(reader: _Reader, root: Any, top: dict[str, tuple[Any, Any]]) -> int | None:
    if "version" not in top:
        reader.error(root, f"missing 'version: {CONFIG_VERSION}' at the top; add it")
        return None
    _, node = top["version"]
    if not (isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "int"):
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
    reader: _Reader, entry: tuple[Any, Any] | None, root: Any, lines: dict[str, int]
) -> tuple[dict[str, AppConfig], set[str]]:
    if entry is None:
        reader.error(root, "missing 'apps:'; list the apps this repo deploys")
        return {}, set()
    entries = reader.mapping(entry[1], "apps", None)
    if entries is None:
        return {}, set()
    apps: dict[str, AppConfig] = {}
    invalid: set[str] = set()
    deps_nodes: dict[str, list[tuple[str, Any]]] = {}
    for name, (key_node, node) in entries.items():
        lines[f"apps.{name}"] = _line(key_node) or 0
        before = len(reader.problems)
        why = dns_label_problem(name)
        if why is not None:
            reader.error(key_node, f"app name {show(name)} {why} (it must be a Kubernetes DNS-1123 label)")
            invalid.add(name)
            continue
        app = _app(reader, name, node)
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
    return {k: v for k, v in apps.items() if k not in invalid}, invalid


def _app(reader: _Reader, name: str, node: Any) -> tuple[AppConfig, list[tuple[str, Any]]] | None:
    kp = f"apps.{name}"
    who: _Who = {"app": name}
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
    )
    return app, unique


def _environments(
    reader: _Reader, entry: tuple[Any, Any] | None, root: Any, lines: dict[str, int]
) -> tuple[dict[str, EnvironmentConfig], set[str]]:
    if entry is None:
        reader.error(root, "missing 'environments:'; list the environments this repo deploys to")
        return {}, set()
    entries = reader.mapping(entry[1], "environments", None)
    if entries is None:
        return {}, set()
    envs: dict[str, EnvironmentConfig] = {}
    invalid: set[str] = set()
    requires_nodes: dict[str, list[tuple[str, Any]]] = {}
    for name, (key_node, node) in entries.items():
        lines[f"environments.{name}"] = _line(key_node) or 0
        before = len(reader.problems)
        why = dns_label_problem(name)
        if why is not None:
            reader.error(
                key_node, f"environment name {show(name)} {why} (it must be a Kubernetes DNS-1123 label)"
            )
            invalid.add(name)
            continue
        parsed = _environment(reader, name, node)
        if parsed is None or len(reader.problems) > before:
            invalid.add(name)
            continue
        envs[name] = parsed[0]
        requires_nodes[name] = parsed[1]
    for name, reqs in requires_nodes.items():
        for req, req_node in reqs:
            if req == name:
                reader.error(req_node, f"environment {show(name)} requires itself; remove it", env=name)
                invalid.add(name)
            elif req not in entries:
                reader.error(
                    req_node,
                    f"environments.{name}.requires names unknown environment {show(req)}; "
                    "add it under environments or remove it",
                    env=name,
                )
                invalid.add(name)
    graph = {name: env.requires for name, env in envs.items()}
    cycle = find_cycle(graph)
    while cycle is not None:
        first = cycle[0]
        node = next(n for r, n in requires_nodes[first] if r == cycle[1])
        reader.error(
            node, f"requires cycle: {' -> '.join(cycle)}; remove one of these requirements", env=first
        )
        invalid.update(cycle)
        for member in cycle:
            graph.pop(member, None)
        cycle = find_cycle(graph)
    return {k: v for k, v in envs.items() if k not in invalid}, invalid


def _environment(
    reader: _Reader, name: str, node: Any
) -> tuple[EnvironmentConfig, list[tuple[str, Any]]] | None:
    kp = f"environments.{name}"
    who: _Who = {"env": name}
    fields = reader.mapping(node, kp, ENV_KEYS, **who)
    if fields is None:
        return None
    if "namespace" not in fields:
        reader.error(node, f"{kp}.namespace is missing; give the Kubernetes namespace to deploy into", **who)
        return None
    namespace = reader.string(fields["namespace"][1], f"{kp}.namespace", required=True, **who)
    if namespace is None:
        return None
    why = dns_label_problem(namespace)
    if why is not None:
        reader.error(
            fields["namespace"][1],
            f"{kp}.namespace {show(namespace)} {why} (it must be a DNS-1123 label)",
            **who,
        )
    context = None
    if "context" in fields:
        context = reader.string(fields["context"][1], f"{kp}.context", **who)
    requires: list[tuple[str, Any]] = []
    if "requires" in fields:
        requires = reader.string_list(fields["requires"][1], f"{kp}.requires", **who) or []
    approvers: list[str] = []
    if "approvers" in fields:
        for approver, approver_node in (
            reader.string_list(fields["approvers"][1], f"{kp}.approvers", **who) or []
        ):
            if APPROVER.fullmatch(approver) is None:
                reader.error(
                    approver_node,
                    f"{kp}.approvers entry {show(approver)} is not @user, @org/team or an email address",
                    **who,
                )
            approvers.append(approver)
    require_approval = False
    if "require_approval" in fields:
        require_approval = bool(
            reader.boolean(fields["require_approval"][1], f"{kp}.require_approval", **who)
        )
        if require_approval and not approvers:
            reader.error(
                fields["require_approval"][1],
                f"{kp}.require_approval is true but approvers is empty; add approvers",
                **who,
            )
    freeze: list[FreezeWindow] = []
    if "freeze" in fields:
        freeze = _freeze(reader, fields["freeze"][1], kp, name)
    env = EnvironmentConfig(
        name=name,
        namespace=namespace,
        context=context,
        requires=tuple(dict.fromkeys(r for r, _ in requires)),
        approvers=tuple(approvers),
        require_approval=require_approval,
        freeze=tuple(freeze),
    )
    return env, requires


def _freeze(reader: _Reader, node: Any, kp: str, env: str) -> list[FreezeWindow]:
    if not isinstance(node, yaml.SequenceNode):
        reader.error(node, f"{kp}.freeze must be a list of {{start, end, reason}} windows", env=env)
        return []
    windows: list[FreezeWindow] = []
    for i, item in enumerate(node.value):
        wkp = f"{kp}.freeze[{i}]"
        fields = reader.mapping(item, wkp, FREEZE_KEYS, env=env)
        if fields is None:
            continue
        missing = [k for k in ("start", "end", "reason") if k not in fields]
        if missing:
            reader.error(item, f"{wkp} is missing {', '.join(missing)}", env=env)
            continue
        times: list[datetime] = []
        for key in ("start", "end"):
            value_node = fields[key][1]
            text = reader.string(value_node, f"{wkp}.{key}", required=True, env=env)
            when = None if text is None else parse_time(text)
            if text is not None and when is None:
                reader.error(
                    value_node,
                    f"{wkp}.{key} {show(text)} is not a time with a timezone; "
                    "write e.g. 2024-12-20T18:00:00Z",
                    env=env,
                )
            if when is not None:
                times.append(when)
        reason = reader.string(fields["reason"][1], f"{wkp}.reason", required=True, env=env)
        weekly = False
        if "weekly" in fields:
            weekly = bool(reader.boolean(fields["weekly"][1], f"{wkp}.weekly", env=env))
        if len(times) != 2 or reason is None:
            continue
        start, end = times
        if end <= start:
            reader.error(item, f"{wkp} ends before it starts; end must be after start", env=env)
            continue
        if weekly and end - start > timedelta(days=7):
            reader.error(item, f"{wkp} is weekly but longer than 7 days", env=env)
            continue
        windows.append(FreezeWindow(start=start, end=end, reason=reason, weekly=weekly))
    return windows
