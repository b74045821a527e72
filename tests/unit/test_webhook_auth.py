"""Webhook authentication and push parsing: pure checks, no server."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.controller.webhook import (
    MalformedHook,
    authenticate,
    github_signature,
    load_secret,
    parse_push,
    verify_bearer,
    verify_github,
    verify_token,
)

SECRET = b"s3cret-value"
SHA = "a" * 40
BODY = json.dumps({"ref": "refs/heads/main", "after": SHA}).encode()


def test_github_signature_is_hmac_sha256_of_the_raw_body():
    expected = "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    assert github_signature(SECRET, BODY) == expected
    assert verify_github(SECRET, BODY, expected)


def test_github_signature_for_another_body_or_secret_is_refused():
    sig = github_signature(SECRET, BODY)
    assert not verify_github(SECRET, BODY + b" ", sig)
    assert not verify_github(b"other", BODY, sig)
    assert not verify_github(SECRET, BODY, sig.replace("sha256=", "sha1="))
    assert not verify_github(SECRET, BODY, None)
    assert not verify_github(SECRET, BODY, "")


def test_no_secret_configured_authenticates_nothing():
    # An empty key would let anyone compute a valid HMAC.
    assert not verify_github(None, BODY, github_signature(b"", BODY))
    assert not verify_github(b"", BODY, github_signature(b"", BODY))
    assert not verify_token(None, "")
    assert not verify_token(b"", "")
    assert not verify_bearer(None, "Bearer ")


def test_gitlab_token_must_match_exactly():
    assert verify_token(SECRET, SECRET.decode())
    assert not verify_token(SECRET, SECRET.decode() + "x")
    assert not verify_token(SECRET, None)
    assert not verify_token(SECRET, "ünïcode")


def test_bearer_token_needs_the_bearer_scheme():
    assert verify_bearer(SECRET, f"Bearer {SECRET.decode()}")
    assert verify_bearer(SECRET, f"bearer {SECRET.decode()}")
    assert not verify_bearer(SECRET, f"Basic {SECRET.decode()}")
    assert not verify_bearer(SECRET, SECRET.decode())
    assert not verify_bearer(SECRET, "Bearer wrong")


def test_authenticate_picks_the_providers_header():
    headers = {
        "X-Hub-Signature-256": github_signature(SECRET, BODY),
        "X-Gitlab-Token": SECRET.decode(),
        "Authorization": f"Bearer {SECRET.decode()}",
    }
    for provider in ("github", "gitlab", "generic"):
        assert authenticate(provider, SECRET, headers, BODY)
        assert not authenticate(provider, SECRET, {}, BODY)
    assert not authenticate("bitbucket", SECRET, headers, BODY)


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=40))
def test_any_body_verifies_only_with_its_own_signature(body, secret):
    sig = github_signature(secret, body)
    assert verify_github(secret, body, sig)
    assert not verify_github(secret, body + b"x", sig)


def test_secret_from_a_file_drops_the_trailing_newline(tmp_path):
    f = tmp_path / "secret"
    f.write_bytes(b"from-file\n")
    assert load_secret(file=f, environ={"DEPLOYCTL_WEBHOOK_SECRET": "from-env"}) == b"from-file"
    assert load_secret(environ={"DEPLOYCTL_WEBHOOK_SECRET_FILE": str(f)}) == b"from-file"
    assert load_secret(environ={"DEPLOYCTL_WEBHOOK_SECRET": "from-env"}) == b"from-env"
    assert load_secret(environ={}) is None
    (tmp_path / "empty").write_bytes(b"\n")
    assert load_secret(file=tmp_path / "empty", environ={}) is None


def test_push_to_the_watched_branch_asks_for_a_sync():
    v = parse_push("github", {"X-GitHub-Event": "push"}, BODY, branch="main")
    assert (v.sync, v.branch, v.sha) == (True, "main", SHA)
    v = parse_push("gitlab", {"X-Gitlab-Event": "Push Hook"}, BODY, branch="main")
    assert v.sync and v.sha == SHA


def test_push_to_another_branch_or_another_event_is_ignored():
    assert not parse_push("github", {"X-GitHub-Event": "push"}, BODY, branch="release").sync
    assert not parse_push("github", {"X-GitHub-Event": "ping"}, b"{}", branch="main").sync
    assert not parse_push("github", {"X-GitHub-Event": "issues"}, b"{}", branch="main").sync
    assert not parse_push("gitlab", {"X-Gitlab-Event": "Tag Push Hook"}, b"{}", branch="main").sync
    deleted = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
    assert not parse_push("github", {"X-GitHub-Event": "push"}, deleted, branch="main").sync


def test_github_form_encoded_payload_is_understood():
    form = urlencode({"payload": BODY.decode()}).encode()
    headers = {"X-GitHub-Event": "push", "Content-Type": "application/x-www-form-urlencoded"}
    assert parse_push("github", headers, form, branch="main").sync


def test_generic_hook_accepts_an_empty_body_or_a_branch():
    assert parse_push("generic", {}, b"", branch="main").sync
    assert parse_push("generic", {}, b'{"branch": "main"}', branch="main").sync
    assert not parse_push("generic", {}, b'{"branch": "dev"}', branch="main").sync


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"after": "' + SHA.encode() + b'"}', b'{"ref": 5}',
     b'{"ref": "refs/heads/main", "after": "xyz"}', b"\xff\xfe"],
)
def test_malformed_push_bodies_are_rejected(body):
    with pytest.raises(MalformedHook):
        parse_push("github", {"X-GitHub-Event": "push"}, body, branch="main")
