"""The deploy-file parser: the first token is a full lowercase SHA; every defect names file and line."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.rules.deployfile import (
    MAX_DEPLOY_FILE_BYTES,
    parse_deploy_file,
    previous_shas,
    split_deploy_path,
)

PATH = "environments/production/web.deploy"
SHA1 = "60375125abec57111e2eaeac7081f8f45bdfe28b"
SHA1_OLD = "0170b60b6c2dee5034650c36dd8b708c57fe87a3"
SHA256 = "a" * 32 + "0123456789abcdef" * 2


def only_error(data: bytes) -> str:
    parsed = parse_deploy_file(data, path=PATH)
    assert parsed.sha is None
    assert len(parsed.problems) == 1
    return str(parsed.problems[0])


def test_first_token_is_the_sha_and_the_rest_is_ignored() -> None:
    data = f"{SHA1}\n* Deploy alarms X, Y and Z\n{SHA1_OLD}\n* Deploy changes to endpoint\n".encode()
    parsed = parse_deploy_file(data, path=PATH)
    assert (parsed.sha, parsed.line, parsed.env, parsed.app, parsed.problems) == (
        SHA1,
        1,
        "production",
        "web",
        (),
    )


def test_sha256_object_names_are_accepted() -> None:
    assert parse_deploy_file(SHA256.encode() + b"\n", path=PATH).sha == SHA256


def test_note_on_the_same_line_after_the_sha_is_ignored() -> None:
    assert parse_deploy_file(f"{SHA1} hotfix for checkout".encode(), path=PATH).sha == SHA1


def test_file_without_trailing_newline_is_fine() -> None:
    assert parse_deploy_file(SHA1.encode(), path=PATH).sha == SHA1


def test_leading_blank_lines_move_the_reported_line() -> None:
    parsed = parse_deploy_file(f"\n\n   {SHA1}\n".encode(), path=PATH)
    assert (parsed.sha, parsed.line) == (SHA1, 3)


def test_short_sha_is_rejected_with_file_and_line() -> None:
    assert only_error(b"abc123\n") == (
        f"{PATH}:1: 'abc123' is a short SHA (6 characters); "
        "write the full 40-character commit SHA (git rev-parse <commit>)"
    )


def test_error_line_points_at_the_token_after_blank_lines() -> None:
    assert only_error(b"\n\nabc123\n").startswith(f"{PATH}:3: 'abc123' is a short SHA")


def test_uppercase_sha_is_rejected_and_told_to_use_lowercase() -> None:
    assert "write the SHA in lowercase" in only_error(SHA1.upper().encode())


def test_non_hex_token_is_not_a_commit_sha() -> None:
    assert "'main' is not a commit SHA" in only_error(b"main\n")


def test_41_hex_characters_are_rejected() -> None:
    assert "41 hex characters" in only_error((SHA1 + "a").encode())


@pytest.mark.parametrize("data", [b"", b"   ", b"\n\n\n", b"\t \r\n"])
def test_empty_and_whitespace_only_files_are_rejected(data: bytes) -> None:
    assert only_error(data) == f"{PATH}:1: is empty; write the full commit SHA to deploy on the first line"


def test_nul_byte_is_reported_on_its_line() -> None:
    assert only_error(f"{SHA1}\nnote\x00\n".encode()) == (
        f"{PATH}:2: deploy file contains a NUL byte; it must be plain UTF-8 text"
    )


def test_invalid_utf8_is_reported_on_its_line() -> None:
    assert only_error(SHA1.encode() + b"\n\n\xff\xfe note") == (
        f"{PATH}:3: deploy file is not valid UTF-8 (byte 0xff); save it as UTF-8"
    )


def test_utf8_bom_is_rejected_with_what_to_do() -> None:
    assert "without BOM" in only_error(b"\xef\xbb\xbf" + SHA1.encode())


def test_utf16_file_is_rejected() -> None:
    assert "UTF-16" in only_error(SHA1.encode("utf-16"))


def test_crlf_line_endings_work_with_a_warning() -> None:
    parsed = parse_deploy_file(f"{SHA1}\r\n* note\r\n".encode(), path=PATH)
    assert parsed.sha == SHA1
    assert [p.severity for p in parsed.problems] == ["warning"]
    assert "CRLF" in parsed.problems[0].message


def test_oversized_file_is_rejected_without_decoding_it() -> None:
    data = SHA1.encode() + b"\n" + b"x" * MAX_DEPLOY_FILE_BYTES
    assert "deploy files are limited to 65536 bytes" in only_error(data)


def test_non_ascii_notes_are_fine() -> None:
    assert parse_deploy_file(f"{SHA1}\n* Café: menu in Ελληνικά 🚀\n".encode(), path=PATH).sha == SHA1


def test_control_characters_in_the_token_are_escaped_in_the_message() -> None:
    message = only_error(b"abc\x1b[31mred\n")
    assert "\\x1b" in message and "\x1b" not in message


def test_long_garbage_token_is_cut_in_the_message() -> None:
    assert len(only_error(b"z" * 5000)) < 300


def test_split_deploy_path_only_accepts_the_layout() -> None:
    assert split_deploy_path("environments/staging/api.deploy") == ("staging", "api")
    assert split_deploy_path("environments/staging/sub/api.deploy") is None
    assert split_deploy_path("environments/api.deploy") is None
    assert split_deploy_path("environments/staging/api.txt") is None


def test_previous_shas_lists_the_history_below_the_first_line() -> None:
    data = f"{SHA1}\n* note\n{SHA1_OLD}\n* older\nnot-a-sha\n".encode()
    assert previous_shas(data) == (SHA1_OLD,)


# --- properties ---------------------------------------------------------------------------------

hex40 = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
notes = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\ufeff"), max_size=200
)


@given(st.binary(max_size=400))
def test_any_bytes_parse_without_raising_and_errors_name_the_file(data: bytes) -> None:
    parsed = parse_deploy_file(data, path=PATH)
    if parsed.sha is None:
        assert parsed.problems and all(str(p).startswith(PATH + ":") for p in parsed.problems)
    else:
        assert len(parsed.sha) in (40, 64) and set(parsed.sha) <= set(string.hexdigits.lower())


@given(hex40, notes)
def test_a_full_sha_followed_by_any_notes_is_that_sha(sha: str, note: str) -> None:
    parsed = parse_deploy_file(f"{sha}\n{note}".encode(), path=PATH)
    assert parsed.sha == sha and parsed.line == 1 and not parsed.problems


@given(st.text(alphabet=" \t\n", max_size=10), hex40, st.sampled_from([" ", "\n", "\t"]), notes)
def test_leading_whitespace_is_skipped_and_counted(lead: str, sha: str, sep: str, note: str) -> None:
    parsed = parse_deploy_file(f"{lead}{sha}{sep}{note}".encode(), path=PATH)
    assert parsed.sha == sha
    assert parsed.line == lead.count("\n") + 1


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=39))
def test_every_short_prefix_is_rejected(prefix: str) -> None:
    parsed = parse_deploy_file(prefix.encode(), path=PATH)
    assert parsed.sha is None and "short SHA" in parsed.problems[0].message
