"""Promote and rollback write forward: a new SHA and a note on top, the file's history kept below."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.rules.deployfile import parse_deploy_file, previous_shas
from deployctl.rules.promote import PromoteError, choose_rollback, note_line, plan_promotions, prepend
from deployctl.rules.validation import build_desired_state

A, B, C, D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
WHEN = datetime(2024, 6, 3, 9, 30, tzinfo=UTC)
CONFIG = b"""version: 1
apps:
  web: {image: registry.example.com/web}
  api: {image: registry.example.com/api}
environments:
  staging: {namespace: shop-staging}
  production: {namespace: shop, requires: [staging]}
"""


def state(files: dict[str, str]):
    return build_desired_state(CONFIG, {k: v.encode() for k, v in files.items()}, ref="worktree", commit=None)


def test_note_line_says_what_who_when_and_why_on_one_line() -> None:
    assert note_line("promoted from staging", who="Dana <dana@x.io>", when=WHEN, message="fix\n  paging") == (
        "* promoted from staging by Dana <dana@x.io> on 2024-06-03T09:30Z: fix paging"
    )


def test_prepend_keeps_every_earlier_line_below() -> None:
    old = f"{B}\n* Deploy paging\n{C}\n* first\n".encode()
    new = prepend(old, A, "* promoted")
    assert new == f"{A}\n* promoted\n".encode() + old
    assert parse_deploy_file(new, path="environments/production/web.deploy").sha == A
    assert previous_shas(new) == (B, C)


def test_prepend_to_a_missing_file_or_one_without_final_newline() -> None:
    assert prepend(None, A, "* note") == f"{A}\n* note\n".encode()
    assert prepend(B.encode(), A, "* note") == f"{A}\n* note\n{B}\n".encode()


def test_prepend_keeps_crlf_files_crlf() -> None:
    assert prepend(f"{B}\r\n".encode(), A, "* n") == f"{A}\r\n* n\r\n{B}\r\n".encode()


def test_prepend_refuses_a_short_sha() -> None:
    with pytest.raises(PromoteError, match="not a full lowercase commit SHA"):
        prepend(None, "abc1234", "* n")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=200))
def test_prepend_never_loses_the_old_content(body: str) -> None:
    old = body.encode()
    new = prepend(old, A, "* n")
    assert old in new and parse_deploy_file(new, path="x").sha == A


def test_promote_one_app_from_staging_to_production() -> None:
    s = state({"environments/staging/web.deploy": f"{A}\n", "environments/production/web.deploy": f"{B}\n"})
    [p] = plan_promotions(s, s, from_env="staging", to_env="production", apps=["web"])
    assert (p.path, p.old_sha, p.new_sha, p.from_env) == ("environments/production/web.deploy", B, A, "staging")


def test_promote_all_takes_only_apps_that_differ() -> None:
    s = state({
        "environments/staging/web.deploy": f"{A}\n", "environments/production/web.deploy": f"{B}\n",
        "environments/staging/api.deploy": f"{C}\n", "environments/production/api.deploy": f"{C}\n",
    })
    assert [p.app for p in plan_promotions(s, s, from_env="staging", to_env="production", apps=None)] == ["web"]


def test_promote_refuses_what_is_already_there_unknown_envs_and_apps() -> None:
    s = state({"environments/staging/web.deploy": f"{A}\n", "environments/production/web.deploy": f"{A}\n"})
    with pytest.raises(PromoteError, match=r"environments/production/web.deploy:1: web already runs aaaa"):
        plan_promotions(s, s, from_env="staging", to_env="production", apps=["web"])
    with pytest.raises(PromoteError, match=r"unknown environment 'prod' \(known: production, staging\)"):
        plan_promotions(s, s, from_env="staging", to_env="prod", apps=["web"])
    with pytest.raises(PromoteError, match=r"environments/staging/shop.deploy: unknown app 'shop'"):
        plan_promotions(s, s, from_env="staging", to_env="production", apps=["shop"])
    with pytest.raises(PromoteError, match="no deploy file for api in staging"):
        plan_promotions(s, s, from_env="staging", to_env="production", apps=["api"])


def test_rollback_one_step_takes_the_previous_distinct_sha() -> None:
    data = f"{A}\n* now\n{A}\n* again\n{B}\n* before\n{C}\n".encode()
    assert choose_rollback(data, path="p") == B
    assert choose_rollback(data, path="p", steps=2) == C


def test_rollback_steps_past_the_history_is_refused_with_file_and_line() -> None:
    with pytest.raises(PromoteError, match=r"^p: only 1 earlier SHA listed below line 1; use --to SHA$"):
        choose_rollback(f"{A}\n{B}\n".encode(), path="p", steps=2)


def test_rollback_to_a_prefix_of_a_sha_that_ran_here() -> None:
    data = f"{A}\n{B}\n".encode()
    assert choose_rollback(data, path="p", to=B[:7]) == B
    assert choose_rollback(data, path="p", to=C[:10], git_history=[C]) == C


def test_rollback_to_a_sha_that_never_ran_needs_force_and_a_full_sha() -> None:
    data = f"{A}\n{B}\n".encode()
    with pytest.raises(PromoteError, match=r"'ddddddd' never ran in this environment"):
        choose_rollback(data, path="p", to=D[:7])
    with pytest.raises(PromoteError, match="give the full 40-character SHA"):
        choose_rollback(data, path="p", to=D[:7], force=True)
    assert choose_rollback(data, path="p", to=D, force=True) == D


def test_rollback_to_the_current_sha_is_refused() -> None:
    with pytest.raises(PromoteError, match=r"p:1: aaaaaaaaaaaa is already the current SHA"):
        choose_rollback(f"{A}\n{B}\n".encode(), path="p", to=A)


def test_promoting_into_an_environment_whose_config_has_errors_says_so() -> None:
    broken = CONFIG.replace(b"production: {namespace: shop, requires: [staging]}",
                            b"production: {namespace: shop, require_approval: maybe}")
    s = build_desired_state(broken, {"environments/staging/web.deploy": f"{A}\n".encode()}, ref="worktree",
                            commit=None)
    with pytest.raises(PromoteError, match="environment 'production' has errors; fix those first"):
        plan_promotions(s, s, from_env="staging", to_env="production", apps=["web"])
