"""The pure rules of the outbound HTTP stack: which proxy, which origin, what is redacted, what Slack sees."""

from __future__ import annotations

import pytest

from deployctl.edges.http import is_loopback, proxy_for, same_origin
from deployctl.edges.notify import slack_text
from deployctl.edges.registry.transport import realm_may_receive_credentials
from deployctl.redact import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://deploy:hunter2@db/x", "postgresql://deploy:***@db/x"),
        (
            "postgres://deploy@db/x?sslmode=require&password=hunter2&a=1",
            "postgres://deploy@db/x?sslmode=require&password=***&a=1",
        ),
        ("host=db user=deploy password=hunter2 dbname=x", "host=db user=deploy password=*** dbname=x"),
        ("host=db password='hunter 2' dbname=x", "host=db password=*** dbname=x"),
        (
            "fetch https://x-access-token:ghp_hunter2@github.com/o/r.git failed",
            "fetch https://x-access-token:***@github.com/o/r.git failed",
        ),
        ("https://hooks.example.com/x?token=hunter2", "https://hooks.example.com/x?token=***"),
        ("http://host:8080/path?x=a@b", "http://host:8080/path?x=a@b"),
        ("ssh://git@host/x and postgresql://deploy@db/x", "ssh://git@host/x and postgresql://deploy@db/x"),
    ],
)
def test_redact_replaces_every_password_form_and_keeps_the_rest(text: str, shown: str) -> None:
    assert redact(text) == shown


ENV = {
    "HTTPS_PROXY": "http://proxy:3128",
    "http_proxy": "http://lower:3128",
    "HTTP_PROXY": "http://upper:3128",
}


@pytest.mark.parametrize(
    ("url", "env", "proxy"),
    [
        ("https://registry.example.com/v2/", ENV, "http://proxy:3128"),
        ("http://registry.example.com/v2/", ENV, "http://lower:3128"),
        ("https://registry.example.com/v2/", {**ENV, "NO_PROXY": "example.com"}, None),
        ("https://registry.example.com:5000/v2/", {**ENV, "no_proxy": "registry.example.com"}, None),
        ("https://other.example.org/v2/", {**ENV, "NO_PROXY": "example.com"}, "http://proxy:3128"),
        ("http://127.0.0.1:5000/v2/", ENV, None),
        ("http://localhost:5000/v2/", ENV, None),
        ("https://registry.example.com/v2/", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
        ("https://registry.example.com/v2/", {}, None),
    ],
)
def test_proxy_from_the_environment_except_no_proxy_and_loopback(
    url: str, env: dict[str, str], proxy: str | None
) -> None:
    assert proxy_for(url, env) == proxy


def test_an_origin_is_scheme_host_and_port() -> None:
    assert same_origin("https://r.io/v2/", "https://R.io:443/token")
    assert not same_origin("https://r.io/v2/", "http://r.io/v2/")
    assert not same_origin("https://r.io/v2/", "https://r.io:8443/v2/")
    assert not same_origin("https://r.io/v2/", "https://evil.io/v2/")
    assert is_loopback("[::1]:5000") and is_loopback("127.0.0.2") and not is_loopback("example.com:5000")


@pytest.mark.parametrize(
    ("realm", "allowed"),
    [
        ("https://auth.example.com/token", True),
        ("http://auth.example.com/token", False),
        ("http://127.0.0.1:5001/token", True),
        ("ftp://auth.example.com/token", False),
    ],
)
def test_a_token_realm_gets_credentials_only_over_https_or_loopback(realm: str, allowed: bool) -> None:
    assert realm_may_receive_credentials(realm) is allowed


def test_slack_text_escapes_markup_from_commit_messages_so_nobody_is_pinged() -> None:
    text = slack_text(
        {
            "app": "web",
            "env": "production",
            "result": "succeeded",
            "new_sha": "a" * 40,
            "file_author": "Mallory <m@example.com>",
            "file_commit_summary": "fix <!channel> & see <https://evil.example|the docs>",
            "error": "<@U123> broke it",
        }
    )
    assert "<!channel>" not in text and "<https://" not in text and "<@U123>" not in text
    assert "fix &lt;!channel&gt; &amp; see &lt;https://evil.example|the docs&gt;" in text
    assert "&lt;@U123&gt; broke it" in text


def test_log_lines_never_carry_a_password(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    from deployctl.log import configure_logging

    configure_logging("info", json=True)
    structlog.get_logger("t").info("audit.opened", url="postgresql://deploy:hunter2@db/x?password=hunter3")
    err = capsys.readouterr().err
    assert "postgresql://deploy:***@db/x?password=***" in err
    assert "hunter" not in err


def test_a_postgresql_url_gets_a_connect_deadline_unless_it_names_one() -> None:
    from deployctl.edges.audit.url import with_connect_timeout

    assert with_connect_timeout("postgresql://deploy@db/x") == "postgresql://deploy@db/x?connect_timeout=10"
    assert (
        with_connect_timeout("postgresql://db/x?sslmode=require")
        == "postgresql://db/x?sslmode=require&connect_timeout=10"
    )
    assert (
        with_connect_timeout("postgresql://db/x?connect_timeout=3") == "postgresql://db/x?connect_timeout=3"
    )
