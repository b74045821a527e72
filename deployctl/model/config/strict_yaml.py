"""Strict YAML for untrusted input: a size-checked, alias-free, tag-checked, depth-limited composer and a
reader that turns its nodes into values and problems with line numbers."""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import yaml

from deployctl.model.config.values import MAX_YAML_DEPTH, show
from deployctl.model.problem import ERROR, WARNING, Problem

YAML_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset(
    YAML_TAG + t for t in ("str", "int", "bool", "null", "float", "timestamp", "map", "seq")
)

class Who(TypedDict, total=False):
    env: str | None
    app: str | None


class Rejected(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# libyaml when present: the pure-Python parser takes ~0.5 s on a 3,000-app config.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compose_strict(text: str) -> Any:
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
            raise Rejected(
                _event_line(event), "YAML aliases (*name) are not allowed; write the value out in full"
            )
        if kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise Rejected(_event_line(event), "holds more than one YAML document (---); keep one")
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
            raise Rejected(
                _event_line(event), "YAML anchors (&name) are not allowed; write the value out in full"
            )
        tag = event.tag
        if tag is not None and tag != "!" and tag not in _ALLOWED_TAGS:
            raise Rejected(_event_line(event), f"YAML tag {show(str(tag))} is not allowed; remove it")
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
            raise Rejected(_event_line(event), f"YAML is nested more than {MAX_YAML_DEPTH} levels deep")
        is_mapping = kind is yaml.MappingStartEvent
        node = (yaml.MappingNode if is_mapping else yaml.SequenceNode)(
            YAML_TAG + ("map" if is_mapping else "seq"), [], event.start_mark, None
        )
        if tag is not None and tag != "!" and tag != node.tag:
            raise Rejected(
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


class Reader:
    """Walks the composed YAML nodes, turning them into values and problems with line numbers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def error(self, node: Any, message: str, *, env: str | None = None, app: str | None = None) -> None:
        self.problems.append(Problem(self.path, node_line(node), message, ERROR, env=env, app=app))

    def warn(self, node: Any, message: str) -> None:
        self.problems.append(Problem(self.path, node_line(node), message, WARNING))

    def mapping(
        self, node: Any, keypath: str, allowed: tuple[str, ...] | None, **who: Unpack[Who]
    ) -> dict[str, tuple[Any, Any]] | None:
        """A mapping's entries by key; unknown keys (when ``allowed`` is given) and duplicates are errors."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{keypath or 'the file'} must be a mapping (key: value lines)", **who)
            return None
        out: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == YAML_TAG + "null":
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

    def string(self, node: Any, keypath: str, *, required: bool = False, **who: Unpack[Who]) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == YAML_TAG + "null":
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

    def boolean(self, node: Any, keypath: str, **who: Unpack[Who]) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == YAML_TAG + "bool":
            return str(node.value).lower() in ("true", "yes", "on", "y")
        self.error(node, f"{keypath} must be true or false", **who)
        return None

    def string_list(self, node: Any, keypath: str, **who: Unpack[Who]) -> list[tuple[str, Any]] | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == YAML_TAG + "null":
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


def node_line(node: Any) -> int | None:
    mark = getattr(node, "start_mark", None)
    return None if mark is None else int(mark.line) + 1
