"""CODEOWNERS entries from approvers, kept in a marked block of a hand-written file."""

from __future__ import annotations

from deployctl.model.config import Config, EnvironmentConfig
from deployctl.rules.codeowners import BEGIN, END, extract_block, is_current, render_block, replace_block

CONFIG = Config(
    version=1,
    apps={},
    environments={
        "staging": EnvironmentConfig("staging", "shop-staging"),
        "production": EnvironmentConfig("production", "shop", approvers=("@shop/release-managers", "ana@x.io")),
        "eu": EnvironmentConfig("eu", "shop-eu", approvers=("@shop/release-managers", "@eu-oncall")),
    },
)


def test_github_block_has_one_line_per_environment_with_approvers_and_guards_the_config() -> None:
    assert render_block(CONFIG, "github") == "\n".join([
        BEGIN,
        "/environments/eu/ @shop/release-managers @eu-oncall",
        "/environments/production/ @shop/release-managers ana@x.io",
        "/deployctl.yaml @shop/release-managers @eu-oncall ana@x.io",
        END,
    ]) + "\n"


def test_gitlab_block_is_a_section() -> None:
    lines = render_block(CONFIG, "gitlab").splitlines()
    assert lines[1] == "[deployctl]"
    assert lines[2] == "/environments/eu/ @shop/release-managers @eu-oncall"


def test_no_approvers_gives_an_empty_block() -> None:
    empty = Config(version=1, apps={}, environments={"staging": EnvironmentConfig("staging", "s")})
    assert render_block(empty, "gitlab") == f"{BEGIN}\n{END}\n"


def test_write_appends_the_block_and_keeps_hand_written_rules() -> None:
    text = "* @shop/everyone\n/docs/ @shop/writers"
    new = replace_block(text, render_block(CONFIG))
    assert new.startswith("* @shop/everyone\n/docs/ @shop/writers\n\n" + BEGIN)
    assert is_current(new, CONFIG)


def test_write_replaces_only_the_block() -> None:
    stale = f"* @all\n{BEGIN}\n/environments/production/ @someone-else\n{END}\n/docs/ @writers\n"
    new = replace_block(stale, render_block(CONFIG))
    assert new.startswith(f"* @all\n{BEGIN}\n")
    assert new.endswith(f"{END}\n/docs/ @writers\n")
    assert "@someone-else" not in new
    assert replace_block(new, render_block(CONFIG)) == new


def test_check_fails_when_stale_missing_or_edited_by_hand() -> None:
    current = render_block(CONFIG)
    assert is_current(current, CONFIG)
    assert not is_current(None, CONFIG)
    assert not is_current("* @all\n", CONFIG)
    assert not is_current(current.replace("@eu-oncall", "@eu-team"), CONFIG)
    assert not is_current(current, CONFIG, "gitlab")


def test_crlf_files_compare_by_content() -> None:
    assert extract_block(render_block(CONFIG).replace("\n", "\r\n")) == render_block(CONFIG)
