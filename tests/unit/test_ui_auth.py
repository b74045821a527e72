"""Who may read the dashboard: loopback without settings is open, anything else needs a token or a
trusted proxy's user header; an untrusted peer's header is never believed."""

from __future__ import annotations

import pytest

from deployctl.ui.auth import UiAuth, UiAuthError, decide, is_loopback, load_token, parse_networks


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert decide(UiAuth.for_listener(host), peer="127.0.0.1", headers={}).allowed


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "dashboard.example.com", ""])
def test_any_other_listener_needs_credentials(host: str) -> None:
    rule = UiAuth.for_listener(host)
    assert rule.required
    refused = decide(rule, peer="10.9.9.9", headers={"X-Forwarded-User": "mallory"})
    assert not refused.allowed and "non-loopback" in refused.reason


def test_bearer_token() -> None:
    rule = UiAuth.for_listener("0.0.0.0", token=b"s3cret")
    assert decide(rule, peer="10.0.0.1", headers={"Authorization": "Bearer s3cret"}).allowed
    assert decide(rule, peer="10.0.0.1", headers={"Authorization": "bearer  s3cret "}).allowed
    for wrong in ("Bearer s3cre", "Basic s3cret", "s3cret", "Bearer "):
        assert not decide(rule, peer="10.0.0.1", headers={"Authorization": wrong}).allowed


def test_user_header_only_from_a_trusted_proxy() -> None:
    rule = UiAuth.for_listener("0.0.0.0", trusted_proxies=parse_networks(["10.0.0.0/24, 127.0.0.1"]))
    ok = decide(rule, peer="10.0.0.7", headers={"X-Forwarded-User": "dana@example.com"})
    assert ok.allowed and ok.user == "dana@example.com"
    assert decide(rule, peer="127.0.0.1", headers={"X-Forwarded-User": "dana"}).allowed
    assert not decide(rule, peer="10.0.1.7", headers={"X-Forwarded-User": "dana"}).allowed
    assert not decide(rule, peer="10.0.0.7", headers={"X-Forwarded-User": "  "}).allowed
    assert not decide(rule, peer=None, headers={"X-Forwarded-User": "dana"}).allowed


def test_configuring_a_token_protects_a_loopback_listener_too() -> None:
    rule = UiAuth.for_listener("127.0.0.1", token=b"t")
    assert rule.required
    assert not decide(rule, peer="127.0.0.1", headers={}).allowed


def test_token_sources(tmp_path) -> None:
    f = tmp_path / "token"
    f.write_text("abc\n")
    assert load_token(file=f, environ={}) == b"abc"
    assert load_token(environ={"DEPLOYCTL_UI_TOKEN": "xyz"}) == b"xyz"
    assert load_token(environ={}) is None
    f.write_text("\n")
    with pytest.raises(UiAuthError, match="is empty"):
        load_token(file=f, environ={})
    with pytest.raises(UiAuthError, match="cannot read"):
        load_token(file=tmp_path / "missing", environ={})
    with pytest.raises(UiAuthError, match="not an IP address"):
        parse_networks(["proxy.local"])
