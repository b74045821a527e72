"""Hostile networks: credentials stay with their host, every call ends at its deadline, passwords never print.

Each server here is a real HTTP server on 127.0.0.1 that records what it was sent: a registry a PR names, a
redirecting git server, a notification sink that 302s, a server that trickles one byte a second.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.git.mirror import Mirror, MirrorError
from deployctl.edges.notify import DeliveryError, HttpRequest, drain, send
from deployctl.edges.registry.client import Credential, CredentialStore, RegistryClient
from deployctl.edges.sinks import NotifySettings, Sink
from deployctl.errors import InvalidInputError
from tests.fixtures.auditdata import make_attempt
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.registry import LocalRegistry, RegistryPusher, free_port

pytestmark = pytest.mark.integration

SHA = "6037512594e4c5ab0fe2d2f5ec2d7ec37c4d1a0b"
DIGEST = "sha256:" + "d" * 64


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    client_port: int


Answer = Callable[[BaseHTTPRequestHandler, "Server"], None]


class Server:
    """A loopback HTTP server that records every request and answers with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self.answered = threading.Event()  # a slow answer was sent to its end
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.seen.append(Seen(self.command, self.path, dict(self.headers), self.client_address[1]))
                try:
                    answer(self, server)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_HEAD = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.host = f"127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self._http.shutdown()
        self._http.server_close()

    def authorizations(self) -> list[str]:
        return [s.headers["Authorization"] for s in self.seen if "Authorization" in s.headers]


def reply(
    h: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None, body: bytes = b""
) -> None:
    h.send_response(status)
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def trickle(h: BaseHTTPRequestHandler, server: Server) -> None:
    """The status line and headers, one byte every half second for about 40 s (or until the test ends).

    Every read gets a byte in time, so a per-read timeout never fires; only a total deadline ends the call.
    """
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 30:
        if server.stopping.wait(0.5):
            return
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
    server.answered.set()
    h.close_connection = True


@pytest.fixture
def servers() -> Iterator[Callable[[Answer], Server]]:
    started: list[Server] = []

    def start(answer: Answer) -> Server:
        started.append(Server(answer))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _decoded(authorization: str) -> str:
    scheme, _, value = authorization.partition(" ")
    return base64.b64decode(value).decode(errors="replace") if scheme == "Basic" else value


# --- registry credentials stay with their host ---------------------------------------------------


def test_registry_password_never_reaches_a_registry_named_in_a_pull_request(
    servers: Callable[[Answer], Server],
    basic_auth_registry: LocalRegistry,
    unique_repo: str,
    make_repo: Callable[..., GitRepo],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pushed = RegistryPusher(basic_auth_registry).push_image(unique_repo, SHA)
    attacker = servers(
        lambda h, s: reply(h, 401, {"WWW-Authenticate": 'Basic realm="give me your password"'})
    )
    repo = make_repo()
    repo.commit(
        {
            "deployctl.yaml": (
                "version: 1\napps:\n"
                f"  api:\n    image: {basic_auth_registry.host}/{unique_repo}\n"
                f"  web:\n    image: {attacker.host}/shop/web\n"  # the line a PR changed
                "environments:\n  staging:\n    namespace: shop\n"
            ),
            "environments/staging/api.deploy": f"{SHA}\n",
            "environments/staging/web.deploy": f"{SHA}\n",
        }
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("DEPLOYCTL_REGISTRY_USERNAME", basic_auth_registry.username)
    monkeypatch.setenv("DEPLOYCTL_REGISTRY_PASSWORD", basic_auth_registry.password)
    monkeypatch.setenv("DEPLOYCTL_REGISTRY_HOST", basic_auth_registry.host)

    result = CliRunner().invoke(main, ["validate", "--repo", str(repo.path), "--check-images", "--strict"])

    assert attacker.seen, "the attacker's registry was asked"
    assert attacker.authorizations() == []
    assert basic_auth_registry.password not in result.output
    assert result.exit_code == 1
    assert f"environments/staging/web.deploy:1: registry {attacker.host} needs credentials" in result.output
    assert "environments/staging/api.deploy" not in result.output, f"api resolved to {pushed.digest}"


def test_global_registry_credentials_without_their_host_are_refused_with_the_variable_to_set(
    make_repo: Callable[..., GitRepo], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = make_repo()
    repo.commit(
        {
            "deployctl.yaml": "version: 1\napps:\n  web:\n    image: registry.example.com/shop/web\n"
            "environments:\n  staging:\n    namespace: shop\n",
            "environments/staging/web.deploy": f"{SHA}\n",
        }
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("DEPLOYCTL_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("DEPLOYCTL_REGISTRY_PASSWORD", "hunter2")
    monkeypatch.delenv("DEPLOYCTL_REGISTRY_HOST", raising=False)
    result = CliRunner().invoke(main, ["validate", "--repo", str(repo.path), "--check-images"])
    assert result.exit_code == 2
    assert "DEPLOYCTL_REGISTRY_HOST is not" in result.output
    assert "hunter2" not in result.output


def test_a_token_realm_over_plain_http_gets_no_credential(
    servers: Callable[[Answer], Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    realm = "http://auth.registry.test/token"  # not loopback: reached through the proxy below

    def registry(h: BaseHTTPRequestHandler, s: Server) -> None:
        if h.headers.get("Authorization") == "Bearer anonymous-token":
            reply(h, 200, {"Docker-Content-Digest": DIGEST, "Content-Type": "application/json"})
        else:
            reply(h, 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry.test"'})

    def proxy(h: BaseHTTPRequestHandler, s: Server) -> None:
        reply(h, 200, {"Content-Type": "application/json"}, json.dumps({"token": "anonymous-token"}).encode())

    trusted = servers(registry)
    forward_proxy = servers(proxy)
    monkeypatch.setenv("HTTP_PROXY", f"http://{forward_proxy.host}")
    store = CredentialStore(static={trusted.host: Credential("ci", "hunter2")})
    with RegistryClient(credentials=store, timeout=5) as client:
        resolution = client.resolve(f"{trusted.host}/shop/web:v1")

    assert (resolution.status, resolution.digest) == ("found", DIGEST)
    assert [s.path.split("?")[0] for s in forward_proxy.seen] == [realm], "HTTP_PROXY is honoured"
    assert forward_proxy.authorizations() == []
    assert all("hunter2" not in _decoded(a) for a in trusted.authorizations())


def test_a_challenge_from_the_host_a_redirect_led_to_gets_no_credential(
    servers: Callable[[Answer], Server],
) -> None:
    def elsewhere(h: BaseHTTPRequestHandler, s: Server) -> None:
        if h.path.startswith("/token"):
            reply(h, 200, {}, json.dumps({"token": "stolen"}).encode())
        else:
            reply(h, 401, {"WWW-Authenticate": f'Bearer realm="http://{s.host}/token",service="x"'})

    other = servers(elsewhere)

    def registry(h: BaseHTTPRequestHandler, s: Server) -> None:
        if h.headers.get("Authorization") != _basic("ci", "hunter2"):
            reply(h, 401, {"WWW-Authenticate": 'Basic realm="registry"'})
        else:
            reply(h, 307, {"Location": f"http://{other.host}{h.path}"})

    trusted = servers(registry)
    store = CredentialStore(static={trusted.host: Credential("ci", "hunter2")})
    with RegistryClient(credentials=store, timeout=5) as client:
        resolution = client.resolve(f"{trusted.host}/shop/web:v1")

    assert trusted.authorizations(), "the registry itself gets the credential"
    assert other.seen and other.authorizations() == []
    assert not any(s.path.startswith("/token") for s in other.seen)
    assert resolution.status == "unauthorized"


def test_registry_calls_reuse_one_connection_and_retry_a_503_on_reads(
    servers: Callable[[Answer], Server],
) -> None:
    def registry(h: BaseHTTPRequestHandler, s: Server) -> None:
        if h.path.endswith("/manifests/flaky") and sum(x.path == h.path for x in s.seen) == 1:
            reply(h, 503)
        else:
            reply(h, 200, {"Docker-Content-Digest": DIGEST})

    server = servers(registry)
    with RegistryClient(credentials=CredentialStore.anonymous(), concurrency=1) as client:
        results = client.resolve_many([f"{server.host}/shop/web:v{i}" for i in range(5)])
        flaky = client.resolve(f"{server.host}/shop/web:flaky")
    assert {r.status for r in results.values()} == {"found"} and flaky.status == "found"
    assert len({s.client_port for s in server.seen}) == 1, "one keep-alive connection"
    assert [s.path for s in server.seen].count("/v2/shop/web/manifests/flaky") == 2


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_a_registry_answer_larger_than_the_bound_is_an_error_not_a_memory_spike(
    servers: Callable[[Answer], Server], declared: bool
) -> None:
    def huge(h: BaseHTTPRequestHandler, s: Server) -> None:
        if h.path == "/v2/":
            return reply(h, 200)
        h.send_response(200)
        h.send_header("Content-Length", str(1 << 30)) if declared else h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(0 if declared or h.command == "HEAD" else 80):
            h.wfile.write(b"x" * 65536)
        h.close_connection = True

    server = servers(huge)
    with RegistryClient(credentials=CredentialStore.anonymous(), timeout=5) as client:
        resolution = client.resolve(f"{server.host}/shop/web:v1")
    assert resolution.status == "error"
    assert f"checking {server.host}/shop/web:v1 failed: {server.host} answered" in (resolution.message or "")
    assert "more than the 4194304" in (resolution.message or "")


# --- deadlines -----------------------------------------------------------------------------------


def test_a_registry_that_trickles_one_byte_a_second_is_cut_at_the_deadline(
    servers: Callable[[Answer], Server],
) -> None:
    server = servers(trickle)
    with RegistryClient(credentials=CredentialStore.anonymous(), timeout=1.0) as client:
        resolution = client.resolve(f"{server.host}/shop/web:v1")
    assert resolution.status == "unreachable"
    assert resolution.message == (
        f"registry {server.host} is unreachable (no complete answer from {server.host} within the 1 s "
        f"deadline); could not check {server.host}/shop/web:v1"
    )
    assert not server.answered.is_set()  # cut off, not read to the end of the 45 s answer


def test_a_notification_sink_that_trickles_fails_at_the_deadline(servers: Callable[[Answer], Server]) -> None:
    server = servers(trickle)
    request = HttpRequest(url=f"http://{server.host}/hook", body=b"{}", headers={})
    with pytest.raises(DeliveryError, match=r"within the 1 s deadline"):
        send(request, timeout=1.0)
    assert not server.answered.is_set()  # cut off, not read to the end of the 45 s answer


def test_a_git_fetch_from_a_trickling_server_stops_at_its_deadline(
    servers: Callable[[Answer], Server], tmp_path: Path
) -> None:
    server = servers(trickle)
    mirror = Mirror(
        f"http://{server.host}/deploy.git", tmp_path / "mirror", environ={"DEPLOYCTL_GIT_FETCH_TIMEOUT": "1"}
    )
    with pytest.raises(MirrorError, match=r"no complete fetch within the 1 s deadline"):
        mirror.fetch()
    assert not server.answered.is_set()  # given up on, not waited for to the end of the 45 s answer
    with pytest.raises(MirrorError, match="the previous fetch is still running"):
        mirror.fetch()


# --- git token stays with its host ---------------------------------------------------------------


def test_the_git_token_never_reaches_the_host_a_redirect_points_at(
    servers: Callable[[Answer], Server], tmp_path: Path
) -> None:
    other = servers(lambda h, s: reply(h, 401, {"WWW-Authenticate": 'Basic realm="other"'}))

    def forge(h: BaseHTTPRequestHandler, s: Server) -> None:
        if "Authorization" not in h.headers:
            reply(h, 401, {"WWW-Authenticate": 'Basic realm="forge"'})
        else:
            reply(h, 302, {"Location": f"http://{other.host}{h.path}"})

    origin = servers(forge)
    mirror = Mirror(
        f"http://{origin.host}/deploy.git", tmp_path / "mirror", environ={"DEPLOYCTL_GIT_TOKEN": "tok-s3cret"}
    )
    with pytest.raises(
        MirrorError, match=rf"redirected to {other.host}.*sent only to {origin.host}"
    ) as caught:
        mirror.fetch()
    assert "tok-s3cret" not in str(caught.value)
    assert any("tok-s3cret" in _decoded(a) for a in origin.authorizations()), "the configured host gets it"
    assert other.seen and not any("tok-s3cret" in _decoded(a) for a in other.authorizations())


@pytest.mark.parametrize("url", ["http://git.example.com/shop/deploy.git", "http://10.1.2.3:3000/deploy.git"])
def test_a_plain_http_deploy_repo_off_loopback_is_refused_before_any_fetch(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # libgit2 follows the first redirect of an http fetch even with follow_redirects set to none
    message = (f"--repo {url}: plain http is refused except on loopback (a redirect on it cannot be stopped, "
               "and a token would travel unencrypted); use https://")
    monkeypatch.setenv("DEPLOYCTL_MIRROR_DIR", str(tmp_path / "mirror"))
    result = CliRunner().invoke(main, ["ui", "--repo", url])
    assert (result.exit_code, result.output) == (2, f"Error: {message}\n")
    with pytest.raises(InvalidInputError) as caught:  # what `watch` builds (controller/serve.py)
        Mirror(url, tmp_path / "mirror")
    assert str(caught.value) == message
    assert not (tmp_path / "mirror").exists()


# --- notifications -------------------------------------------------------------------------------


def test_a_notification_sink_that_redirects_is_a_failed_delivery_retried_later(
    servers: Callable[[Answer], Server], tmp_path: Path
) -> None:
    other = servers(lambda h, s: reply(h, 200))
    sink = servers(lambda h, s: reply(h, 302, {"Location": f"http://{other.host}/collect"}))
    store = open_store(f"sqlite://{tmp_path}/audit.db")
    try:
        settings = NotifySettings((Sink(type="webhook", name="hook", url=f"http://{sink.host}/hook"),))
        drain(store, settings, max_wait_seconds=0)
        store.finish(store.start(make_attempt(app="web")), result="succeeded")
        report = drain(store, settings, max_wait_seconds=0)
        [delivery] = store.deliveries(sink="hook")  # type: ignore[attr-defined]
    finally:
        store.close()
    assert (report.delivered, report.failed_attempts, report.pending) == (0, 1, 1)
    assert len(sink.seen) == 1 and other.seen == []
    assert delivery.ok is False and delivery.next_attempt_at is not None
    assert delivery.error == f"HTTP 302 from {sink.host}: redirected to 127.0.0.1; redirects are not followed"


# --- passwords never print -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://deploy:hunter2@127.0.0.1:{port}/audit",
            "postgresql://deploy:***@127.0.0.1:{port}/audit?connect_timeout=10",
        ),
        (
            "postgresql://deploy@127.0.0.1:{port}/audit?sslmode=disable&password=hunter2",
            "postgresql://deploy@127.0.0.1:{port}/audit?sslmode=disable&password=***&connect_timeout=10",
        ),
    ],
)
def test_audit_database_passwords_are_redacted_in_connection_errors(url: str, shown: str) -> None:
    port = free_port()
    result = CliRunner().invoke(main, ["history", "--audit", url.format(port=port)])
    assert result.exit_code == 1
    assert f"Error: audit: cannot open PostgreSQL store {shown.format(port=port)}: " in result.output
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "host=127.0.0.1 port=5432 user=deploy password=hunter2 dbname=audit",
            "looks like a libpq connection string",
        ),
        ("mysql://deploy:hunter2@db/audit", "use sqlite:///absolute/path.db"),
    ],
)
def test_an_audit_url_of_another_form_is_refused_without_echoing_its_password(
    url: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tmp_path.parent / f"{tmp_path.name}-settings.yaml"
    settings.write_text(f"notify:\n  - type: webhook\n    url: http://127.0.0.1:{free_port()}/hook\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["notify", "drain", "--settings", str(settings), "--max-wait", "0", "--audit", url]
    )
    assert result.exit_code == 2
    assert says in result.output
    assert "hunter2" not in result.output and "***" in result.output
    assert list(tmp_path.iterdir()) == [], "no SQLite file named after the DSN"


# --- name resolution ----------------------------------------------------------------------------

# Run inside `unshare --user --map-root-user --mount --net`: a resolv.conf of our own points glibc's resolver
# at a DNS server on 127.0.0.1:53 that reads every query and never answers; the resolver itself waits 5 x 30 s
# before it gives up, far past the test's ceiling.
STALLED_DNS_CLIENT = """
import json, socket, sys, threading
from deployctl.edges.http import HttpClient, HttpError

silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
silent.bind(("127.0.0.1", 53))
threading.Thread(target=lambda: [silent.recvfrom(512) for _ in iter(int, 1)], daemon=True).start()
try:
    HttpClient(user_agent="test").request("GET", "http://registry.stalled.example/v2/", deadline=1.0)
    print(json.dumps({"error": None}))
except HttpError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def test_a_dns_server_that_never_answers_is_cut_at_the_call_deadline(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-rmn", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip("needs unprivileged user and network namespaces (unshare -rmn) for a resolver of our own")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:5\n")
    client = tmp_path / "client.py"
    client.write_text(STALLED_DNS_CLIENT)
    script = f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && exec {sys.executable} {client}"
    # the ceiling is generous for a 1 s deadline, and well short of the resolver's own 150 s
    done = subprocess.run([unshare, "-rmn", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "error": "DeadlineExceeded",
        "message": "no complete answer from registry.stalled.example within the 1 s deadline",
    }
