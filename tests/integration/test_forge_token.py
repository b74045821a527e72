"""The forge token is bound to the forge's host: real sockets, a forge that redirects to another server and
one that pages onto another host. The other server records what it receives; it must never see the token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deployctl.edges.forge import ForgeError, ForgeSettings, open_forge

pytestmark = pytest.mark.integration

MERGE = "3" * 40
TOKEN = "forge-token-never-elsewhere"


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with what ``server.answer(path)`` says and records the request headers."""

    def do_GET(self) -> None:  # noqa: N802
        self.server.seen.append((self.path, dict(self.headers)))  # type: ignore[attr-defined]
        status, headers, body = self.server.answer(self.path)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def serve(answer) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.answer = answer  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def elsewhere() -> Iterator[ThreadingHTTPServer]:
    server = serve(lambda path: (200, {}, {"number": 1, "merged": True, "head": {"sha": MERGE}}))
    yield server
    server.shutdown()
    server.server_close()


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_a_redirect_to_another_host_gets_no_token(elsewhere: ThreadingHTTPServer) -> None:
    forge = serve(lambda path: (302, {"Location": f"{url(elsewhere)}{path}"}, {}))
    try:
        client = open_forge(ForgeSettings("gitea", url(forge), "acme/deploy", TOKEN))
        try:
            client.pull_request_for([MERGE])
        except ForgeError:
            pass  # whatever the other host answers, what matters is what it was sent
        finally:
            client.close()
    finally:
        forge.shutdown()
        forge.server_close()
    assert forge.seen and all(h.get("Authorization") == f"token {TOKEN}" for _, h in forge.seen)  # type: ignore[attr-defined]
    assert elsewhere.seen, "the redirect was followed"  # type: ignore[attr-defined]
    for _, headers in elsewhere.seen:  # type: ignore[attr-defined]
        assert TOKEN not in json.dumps(headers)


def test_a_next_page_on_another_host_is_refused_and_never_asked(elsewhere: ThreadingHTTPServer) -> None:
    forge = serve(lambda path: (200, {"Link": f'<{url(elsewhere)}/steal?page=2>; rel="next"'}, []))
    try:
        client = open_forge(ForgeSettings("github", url(forge), "acme/deploy", TOKEN))
        with pytest.raises(ForgeError, match="another host"):
            client.pull_request_for([MERGE])
        client.close()
    finally:
        forge.shutdown()
        forge.server_close()
    assert elsewhere.seen == []  # type: ignore[attr-defined]


def test_a_forge_url_on_plain_http_off_loopback_is_refused_before_any_call(monkeypatch) -> None:
    monkeypatch.setenv("DEPLOYCTL_FORGE_TYPE", "gitea")
    monkeypatch.setenv("DEPLOYCTL_FORGE_URL", "http://forge.example.com")
    monkeypatch.setenv("DEPLOYCTL_FORGE_REPO", "acme/deploy")
    monkeypatch.setenv("DEPLOYCTL_FORGE_TOKEN", TOKEN)
    with pytest.raises(ForgeError, match="https only"):
        ForgeSettings.from_env()
