"""Pure parts of the controller's guards: JSON depth, log rate limits, the standby->leader forward format."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.controller import forward as fwd
from deployctl.controller.ratelimit import RateLimiter
from deployctl.controller.webhook import MAX_JSON_DEPTH, MalformedHook, json_depth, parse_push

SHA = "b" * 40


@given(st.recursive(st.none() | st.integers() | st.text(), lambda inner: st.lists(inner) | st.dictionaries(
    st.text(), inner), max_leaves=20))
def test_json_depth_matches_the_documents_nesting(doc):
    def depth(value) -> int:
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        return 0
    assert json_depth(json.dumps(doc).encode(), limit=1000) == depth(doc)


def test_brackets_inside_strings_and_escaped_quotes_do_not_count():
    assert json_depth(b'{"a": "[[[[\\"[[[", "b": "\\\\"}', limit=10) == 1


def test_nesting_past_the_limit_is_a_malformed_hook_not_a_recursion_error():
    body = b'{"ref": "refs/heads/main", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(MalformedHook, match=f"deeper than {MAX_JSON_DEPTH}"):
        parse_push("generic", {}, body, branch="main")
    ok = b'{"ref": "refs/heads/main", "x": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    assert parse_push("generic", {}, ok, branch="main").sync


def test_rate_limiter_lets_a_burst_through_then_a_steady_rate_and_counts_the_rest():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("k")[0] for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("other") == (True, 0)  # keys are limited apart
    now[0] = 0.5  # one token back
    assert limiter.allow("k") == (True, 2)  # and it says how many lines were left out
    assert limiter.allow("k") == (False, 1)


def test_forward_signature_binds_the_body_and_is_not_a_github_signature():
    from deployctl.controller.webhook import github_signature

    body = fwd.encode(provider="github", sha=SHA, sender="b")
    sig = fwd.sign(b"s", body)
    assert fwd.verify(b"s", body, sig)
    assert not fwd.verify(b"s", body + b" ", sig)
    assert not fwd.verify(b"other", body, sig)
    assert not fwd.verify(None, body, sig)
    assert not fwd.verify(b"s", body, github_signature(b"s", body))
    assert fwd.decode(body) == ("github", SHA, "b")


@pytest.mark.parametrize("body", [b"[]", b"{", b'{"provider": 1, "from": "b"}',
                                  b'{"provider": "github", "from": "b", "sha": "nope"}'])
def test_malformed_forward_bodies_are_refused(body):
    with pytest.raises(fwd.ForwardError):
        fwd.decode(body)


@pytest.mark.parametrize(("address", "usable"), [
    ("http://10.0.0.7:8080", True), ("https://leader.example:8443", True), ("http://[fd00::1]:8080", True),
    ("ftp://10.0.0.7", False), ("http://user:pw@10.0.0.7", False), ("http://:8080", False),
    ("http://10.0.0.7:99999", False), ("10.0.0.7:8080", False), ("http://10.0.0.7/?q=1", False),
])
def test_only_plain_http_urls_from_the_lease_are_forwarded_to(address, usable):
    assert (fwd.usable_address(address) is None) is usable
