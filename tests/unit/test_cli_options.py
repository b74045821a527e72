"""The shared options of cli/options.py reach a command as one value each."""

from __future__ import annotations

import click
from click.testing import CliRunner

from deployctl.cli.options import UiAuthInput, audit_options, ui_auth_options
from deployctl.model.audit_target import AUDIT_DEFAULT, AUDIT_OFF, AuditTarget


def seen(*decorators, args: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    got: dict[str, object] = {}

    @click.option("--other", default="x")
    def callback(**kwargs: object) -> None:
        got.update(kwargs)

    for decorator in reversed(decorators):
        callback = decorator(callback)
    result = CliRunner().invoke(click.command()(callback), args, env=env or {"DEPLOYCTL_AUDIT": ""}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return got


def test_audit_and_no_audit_are_one_audit_target() -> None:
    assert seen(audit_options(), args=[]) == {"other": "x", "audit": AUDIT_DEFAULT}
    assert seen(audit_options(), args=["--no-audit"])["audit"] == AUDIT_OFF
    assert seen(audit_options(), args=["--audit", "sqlite:///a.db"])["audit"] == AuditTarget("sqlite:///a.db")
    assert seen(audit_options(), args=[], env={"DEPLOYCTL_AUDIT": "sqlite:///env.db"})["audit"] == \
        AuditTarget("sqlite:///env.db")
    assert seen(audit_options(record=False, default=AUDIT_OFF), args=[])["audit"] == AUDIT_OFF


def test_a_named_store_is_evidence_for_a_gate_the_default_is_not() -> None:
    assert AuditTarget("sqlite:///a.db").named and not AUDIT_DEFAULT.named and not AUDIT_OFF.named


def test_a_command_that_does_not_record_has_no_no_audit_flag() -> None:
    command = click.command()(audit_options(record=False)(lambda **kw: None))
    assert [p.name for p in command.params] == ["audit_url"]


def test_ui_auth_options_with_a_prefix() -> None:
    got = seen(ui_auth_options("ui-"), args=["--ui-token-file", "t", "--ui-trusted-proxy", "10.0.0.1"],
               env={"DEPLOYCTL_UI_TRUSTED_PROXIES": ""})
    assert got == {"other": "x", "ui_auth": UiAuthInput("t", ("10.0.0.1",))}
