"""A corpus of hostile deploy repos. Each must yield an error naming the file (and line where there
is one), never a traceback. The same corpus runs through `deployctl validate` on real git repos in
tests/integration/test_validate_cli.py.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from deployctl.cli.output import render_table
from deployctl.cli.review import _md
from deployctl.model.printable import printable
from deployctl.model.problem import Problem
from deployctl.rules.validation import FILE, SUBMODULE, SYMLINK, RepoEntry, build_desired_state
from tests.fixtures.gitrepo import FileValue, Submodule, Symlink

SHA = "60375125abec57111e2eaeac7081f8f45bdfe28b"
WEB = "environments/staging/web.deploy"
CONFIG = b"""\
version: 1
apps:
  web: {image: registry.example.com/shop/web, depends_on: [api]}
  api: {image: registry.example.com/shop/api}
environments:
  staging: {namespace: shop-staging}
  production: {namespace: shop, requires: [staging]}
"""
GOOD_FILES: dict[str, FileValue] = {
    "environments/staging/api.deploy": f"{SHA}\n".encode(),
    "environments/production/api.deploy": f"{SHA}\n".encode(),
}


@dataclass(frozen=True)
class Case:
    """A hostile repo: config bytes (None: no deployctl.yaml) plus files, and the error it must give."""

    name: str
    files: Mapping[str, FileValue]
    where: str  # "path:line" or "path" the error must name
    says: str  # a part of the message
    config: bytes | Symlink | None = CONFIG
    extra: Mapping[str, FileValue] = field(default_factory=lambda: dict(GOOD_FILES))


def deploy(data: bytes, path: str = WEB) -> dict[str, FileValue]:
    return {path: data}


BILLION_LAUGHS = (
    b"version: 1\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    + b"".join(
        b"%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n" % ((bytes([c]),) * 2 + (bytes([c - 1]),) * 8)
        for c in range(ord("c"), ord("k"))
    )
)

CASES = [
    # --- the SHA ---
    Case("empty file", deploy(b""), f"{WEB}:1", "is empty"),
    Case("whitespace only", deploy(b"  \n\t\n  "), f"{WEB}:1", "is empty"),
    Case("short sha", deploy(b"6037512\n"), f"{WEB}:1", "is a short SHA (7 characters)"),
    Case("uppercase sha", deploy(SHA.upper().encode()), f"{WEB}:1", "in lowercase"),
    Case("mixed case sha", deploy((SHA[:20].upper() + SHA[20:]).encode()), f"{WEB}:1", "in lowercase"),
    Case("non-hex 40 chars", deploy(b"g" * 40), f"{WEB}:1", "is not a commit SHA"),
    Case("39 hex", deploy(SHA[:39].encode()), f"{WEB}:1", "short SHA (39 characters)"),
    Case("41 hex", deploy((SHA + "0").encode()), f"{WEB}:1", "41 hex characters"),
    Case("63 hex", deploy(b"a" * 63), f"{WEB}:1", "63 hex characters"),
    Case("0x prefix", deploy(b"0x" + SHA.encode()), f"{WEB}:1", "is not a commit SHA"),
    Case("branch name", deploy(b"main\n"), f"{WEB}:1", "'main' is not a commit SHA"),
    Case("HEAD", deploy(b"HEAD\n"), f"{WEB}:1", "'HEAD' is not a commit SHA"),
    Case("tag name", deploy(b"v1.2.3\n"), f"{WEB}:1", "is not a commit SHA"),
    Case("sha glued to shell", deploy(f"{SHA};rm -rf /\n".encode()), f"{WEB}:1", "is not a commit SHA"),
    Case(
        "sha on line 3 after junk", deploy(f"\n\n# {SHA}\n".encode()), f"{WEB}:3", "'#' is not a commit SHA"
    ),
    Case("zero-width space", deploy(("\u200b" + SHA).encode()), f"{WEB}:1", "is not a commit SHA"),
    Case("fullwidth digits", deploy(("\uff16" * 40).encode()), f"{WEB}:1", "is not a commit SHA"),
    Case("ansi escape", deploy(b"\x1b[2J\x1b[H" + SHA.encode()), f"{WEB}:1", "\\x1b"),
    # --- encodings ---
    Case("utf-8 bom", deploy(codecs.BOM_UTF8 + SHA.encode()), f"{WEB}:1", "byte-order mark"),
    Case("utf-16 le", deploy(SHA.encode("utf-16")), f"{WEB}:1", "UTF-16"),
    Case("utf-16 be", deploy(codecs.BOM_UTF16_BE + SHA.encode("utf-16-be")), f"{WEB}:1", "UTF-16"),
    Case("nul byte line 2", deploy(f"{SHA}\n\x00\n".encode()), f"{WEB}:2", "NUL byte"),
    Case("nul inside sha", deploy(SHA[:10].encode() + b"\x00" + SHA[11:].encode()), f"{WEB}:1", "NUL byte"),
    Case("invalid utf-8", deploy(SHA.encode() + b"\n* caf\xe9\n"), f"{WEB}:2", "not valid UTF-8 (byte 0xe9)"),
    Case("overlong utf-8", deploy(b"\xc0\xaf" + SHA.encode()), f"{WEB}:1", "not valid UTF-8"),
    Case("lone surrogate", deploy(SHA.encode() + b"\n\xed\xa0\x80\n"), f"{WEB}:2", "not valid UTF-8"),
    Case(
        "10 MB file", deploy(SHA.encode() + b"\n" + b"x" * (10 * 1024 * 1024)), f"{WEB}:1", "limited to 65536"
    ),
    Case(
        "64 KiB + 1", deploy(SHA.encode() + b"\n" + b"x" * (64 * 1024 - 40)), f"{WEB}:1", "limited to 65536"
    ),
    # --- names and layout ---
    Case(
        "uppercase env folder",
        deploy(SHA.encode(), "environments/Staging/web.deploy"),
        "environments/Staging",
        "uppercase",
    ),
    Case(
        "uppercase app",
        deploy(SHA.encode(), "environments/staging/Web.deploy"),
        "environments/staging/Web.deploy",
        "app name 'Web' has uppercase letters",
    ),
    Case(
        "underscore app",
        deploy(SHA.encode(), "environments/staging/web_app.deploy"),
        "environments/staging/web_app.deploy",
        "DNS-1123",
    ),
    Case(
        "dotted app",
        deploy(SHA.encode(), "environments/staging/web.v2.deploy"),
        "environments/staging/web.v2.deploy",
        "DNS-1123",
    ),
    Case(
        "empty app name",
        deploy(SHA.encode(), "environments/staging/.deploy"),
        "environments/staging/.deploy",
        "app name '' is empty",
    ),
    Case(
        "dot-dot app name",
        deploy(SHA.encode(), "environments/staging/...deploy"),
        "environments/staging/...deploy",
        "DNS-1123",
    ),
    Case(
        "encoded traversal",
        deploy(SHA.encode(), "environments/staging/..%2f..%2fetc%2fpasswd.deploy"),
        "environments/staging/..%2f..%2fetc%2fpasswd.deploy",
        "DNS-1123",
    ),
    Case(
        "64-char app name",
        deploy(SHA.encode(), f"environments/staging/{'a' * 64}.deploy"),
        f"environments/staging/{'a' * 64}.deploy",
        "is 64 characters long",
    ),
    Case(
        "unicode app name",
        deploy(SHA.encode(), "environments/staging/wéb.deploy"),
        "environments/staging/wéb.deploy",
        "DNS-1123",
    ),
    Case(
        "homoglyph app name",
        deploy(SHA.encode(), "environments/staging/w\u0435b.deploy"),
        "environments/staging/w\u0435b.deploy",
        "DNS-1123",
    ),
    Case(
        "space in app name",
        deploy(SHA.encode(), "environments/staging/my app.deploy"),
        "environments/staging/my app.deploy",
        "DNS-1123",
    ),
    Case(
        "nested folder",
        deploy(SHA.encode(), "environments/staging/eu/web.deploy"),
        "environments/staging/eu",
        "nested folder",
    ),
    Case(
        "deeply nested",
        deploy(SHA.encode(), "environments/staging/a/b/c/d/web.deploy"),
        "environments/staging/a",
        "nested folder",
    ),
    Case("symlinked deploy file", {WEB: Symlink("/etc/passwd")}, WEB, "is a symlink"),
    Case(
        "symlinked env folder",
        {"environments/production": Symlink("staging")},
        "environments/production",
        "is a symlink",
        extra={"environments/staging/api.deploy": f"{SHA}\n".encode()},
    ),
    Case("submodule as deploy file", {WEB: Submodule(SHA)}, WEB, "is a submodule"),
    Case(
        "submodule as env folder",
        {"environments/staging": Submodule(SHA)},
        "environments/staging",
        "is a submodule",
        extra={},
    ),
    Case("environments is a file", {"environments": b"staging\n"}, "environments", "not a folder", extra={}),
    Case(
        "environments is a symlink", {"environments": Symlink("/")}, "environments", "not a folder", extra={}
    ),
    Case(
        "env folder not in config",
        deploy(SHA.encode(), "environments/qa/web.deploy"),
        "environments/qa",
        "has no entry under environments:",
    ),
    Case(
        "app not in config",
        deploy(SHA.encode(), "environments/staging/db.deploy"),
        "environments/staging/db.deploy:1",
        "app 'db' has no entry under apps:",
    ),
    # --- deployctl.yaml ---
    Case("no deployctl.yaml", deploy(SHA.encode()), "deployctl.yaml", "is missing", config=None),
    Case(
        "config is a symlink",
        deploy(SHA.encode()),
        "deployctl.yaml",
        "is a symlink",
        config=Symlink("/etc/passwd"),
    ),
    Case(
        "billion laughs",
        deploy(SHA.encode()),
        "deployctl.yaml:2",
        "anchors (&name) are not allowed",
        config=BILLION_LAUGHS,
    ),
    Case(
        "alias without anchor",
        deploy(SHA.encode()),
        "deployctl.yaml:2",
        "aliases (*name) are not allowed",
        config=b"version: 1\napps: *nothing\n",
    ),
    Case(
        "python tag",
        deploy(SHA.encode()),
        "deployctl.yaml:2",
        "is not allowed",
        config=b"version: 1\napps: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
    ),
    Case(
        "custom local tag",
        deploy(SHA.encode()),
        "deployctl.yaml:3",
        "'!vault' is not allowed",
        config=b"version: 1\napps:\n  web: {image: !vault x}\n",
    ),
    Case(
        "binary tag",
        deploy(SHA.encode()),
        "deployctl.yaml:1",
        "is not allowed",
        config=b"version: !!binary MQ==\n",
    ),
    Case(
        "deep nesting",
        deploy(SHA.encode()),
        "deployctl.yaml:2",
        "nested more than 16 levels",
        config=b"version: 1\napps: " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
    ),
    Case(
        "2 MB config",
        deploy(SHA.encode()),
        "deployctl.yaml",
        "the limit is 1048576 bytes",
        config=CONFIG + b"#" * (2 * 1024 * 1024),
    ),
    Case(
        "config invalid utf-8",
        deploy(SHA.encode()),
        "deployctl.yaml:3",
        "not valid UTF-8",
        config=b"version: 1\napps: {}\n# \xff\nenvironments: {}\n",
    ),
    Case("config nul byte", deploy(SHA.encode()), "deployctl.yaml:2", "NUL byte", config=b"version: 1\n\x00"),
    Case(
        "config control char",
        deploy(SHA.encode()),
        "deployctl.yaml",
        "not valid YAML",
        config=b"version: 1\napps: {}\nenvironments: {x: \x07}\n",
    ),
    Case(
        "config utf-16",
        deploy(SHA.encode()),
        "deployctl.yaml:1",
        "UTF-16",
        config=CONFIG.decode().encode("utf-16"),
    ),
    Case(
        "tab indentation",
        deploy(SHA.encode()),
        "deployctl.yaml:3",
        "not valid YAML",
        config=b"version: 1\napps:\n\tweb: {}\n",
    ),
    Case(
        "two documents",
        deploy(SHA.encode()),
        "deployctl.yaml:2",
        "more than one YAML document",
        config=b"version: 1\n---\nversion: 1\n",
    ),
    Case("empty config", deploy(SHA.encode()), "deployctl.yaml", "is empty", config=b""),
    Case(
        "config is a list",
        deploy(SHA.encode()),
        "deployctl.yaml:1",
        "must be a mapping",
        config=b"- a\n- b\n",
    ),
    Case(
        "unknown key",
        deploy(SHA.encode()),
        "deployctl.yaml:3",
        "unknown key 'apps.web.imgae'",
        config=CONFIG.replace(b"{image:", b"{imgae:", 1),
    ),
    Case(
        "depends_on cycle",
        deploy(SHA.encode()),
        "deployctl.yaml:4",
        "depends_on cycle: api -> web -> api",
        config=CONFIG.replace(b"shop/api}", b"shop/api, depends_on: [web]}"),
    ),
    Case(
        "requires unknown env",
        deploy(SHA.encode()),
        "deployctl.yaml:7",
        "unknown environment 'stagin'",
        config=CONFIG.replace(b"requires: [staging]", b"requires: [stagin]"),
    ),
    Case(
        "bad namespace",
        deploy(SHA.encode()),
        "deployctl.yaml:6",
        "namespace 'shop_staging'",
        config=CONFIG.replace(b"namespace: shop-staging", b"namespace: shop_staging"),
    ),
    Case(
        "version 2",
        deploy(SHA.encode()),
        "deployctl.yaml:1",
        "version '2' is not supported",
        config=CONFIG.replace(b"version: 1", b"version: 2"),
    ),
    Case(
        "image with tag",
        deploy(SHA.encode()),
        "deployctl.yaml:3",
        "has a tag or digest",
        config=CONFIG.replace(b"shop/web,", b"shop/web:latest,"),
    ),
    # --- control characters in names: escaped wherever a message prints them ---
    Case(
        "ESC, OSC and BEL in a folder name",
        deploy(SHA.encode(), "environments/\x1b]0;owned\x07\x1b[2J/web.deploy"),
        "environments/\\x1b]0;owned\\x07\\x1b[2J",
        "environment folder '\\x1b]0;owned\\x07\\x1b[2J'",
    ),
    Case(
        "CR and a bidi override in a file name",
        deploy(SHA.encode(), "environments/staging/w\reb\u202e.deploy"),
        "environments/staging/w\\x0deb\\u202e.deploy",
        "app name 'w\\reb\\u202e'",
    ),
    Case(
        "app with config errors",
        deploy(SHA.encode()),
        f"{WEB}:1",
        "app 'web' has errors in deployctl.yaml",
        config=CONFIG.replace(b"depends_on: [api]", b"depends_on: [db]"),
    ),
]


def entries(files: Mapping[str, FileValue]) -> list[RepoEntry]:
    out = []
    for path, value in files.items():
        if isinstance(value, Symlink):
            out.append(RepoEntry(path, SYMLINK))
        elif isinstance(value, Submodule):
            out.append(RepoEntry(path, SUBMODULE))
        else:
            assert isinstance(value, bytes)
            out.append(RepoEntry(path, FILE, value, len(value)))
    return out


def build(case: Case) -> list[str]:
    config: bytes | RepoEntry | None
    config = RepoEntry("deployctl.yaml", SYMLINK) if isinstance(case.config, Symlink) else case.config
    state = build_desired_state(config, entries({**case.extra, **case.files}), ref="HEAD", commit=None)
    assert not state.ok
    return [str(p) for p in state.errors]


def test_corpus_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_an_error_naming_file_and_line(case: Case) -> None:
    errors = build(case)
    expected_prefix = case.where + ": "
    matching = [e for e in errors if e.startswith(expected_prefix) and case.says in e]
    assert matching, f"expected an error at {case.where!r} saying {case.says!r}; got {errors}"
    assert all(len(e) < 400 for e in errors)


def test_hostile_files_never_produce_a_target_for_their_app() -> None:
    for case in CASES:
        if case.name == "requires unknown env":  # only production is broken there
            continue
        config = RepoEntry("deployctl.yaml", SYMLINK) if isinstance(case.config, Symlink) else case.config
        state = build_desired_state(config, entries({**case.extra, **case.files}), ref="HEAD", commit=None)
        assert state.target("staging", "web") is None, case.name


# --- rendering: every human and markdown output escapes what came from the repo ----------------

HOSTILE_TEXT = "Fix paging\x1b]0;owned\x07\x1b[2J\r`rm -rf`\u202e"


def test_printable_escapes_controls_bidi_overrides_and_lone_surrogates() -> None:
    assert printable(HOSTILE_TEXT) == "Fix paging\\x1b]0;owned\\x07\\x1b[2J\\x0d`rm -rf`\\u202e"
    assert printable("caf\udce9") == "caf\\udce9"
    assert printable("l1\nl2\x1b", newlines=True) == "l1\nl2\\x1b"
    assert printable("Ünïcode stays") == "Ünïcode stays"


def test_tables_and_problems_print_no_control_character() -> None:
    table = render_table(("A", "B"), [(HOSTILE_TEXT, "x")])
    assert not any(c in table for c in "\x1b\x07\r\u202e")
    assert str(Problem("environments/\x1b[31mred/web.deploy", 1, "bad")) == "environments/\\x1b[31mred/web.deploy:1: bad"


def test_markdown_cells_carry_no_control_character_and_cannot_end_a_code_span() -> None:
    assert _md(HOSTILE_TEXT) == "Fix paging\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x60rm -rf\\x60\\u202e"
