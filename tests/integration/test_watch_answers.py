"""The informer against the answers an API server may give a watch that the local control plane
does not give on demand: ``504 Too large resource version`` (a watch cache behind the LIST, as
API servers before the watch cache waited for freshness themselves, or behind a load balancer,
answer), a stream the server ends early, and a connection dropped mid-stream.

A loopback HTTP server plays the API server: it answers each watch request with the next scripted
answer and every LIST with the objects, counting them. What is asserted is what the informer asked
for (LISTs, and the resourceVersion each watch resumes from) and what it holds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from deployctl.edges.kube.cluster import Cluster
from deployctl.edges.kube.informer import Informer

pytestmark = pytest.mark.integration

NAMESPACE = "shop"
TOO_NEW = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 504,
                                       "reason": "Timeout", "message": "Too large resource version: 120, current: 100"}}


def deployment(image: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"name": "api", "namespace": NAMESPACE, "labels": {"deployctl.dev/app": "api"},
                         "resourceVersion": str(rv), "generation": 1},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "api", "image": image}]}}}}


Answer = Callable[[BaseHTTPRequestHandler, "ApiServer"], None]


def too_new(h: BaseHTTPRequestHandler, server: ApiServer) -> None:
    """What a watch cache behind the requested resourceVersion answers (after waiting for it)."""
    _stream(h, [TOO_NEW])


def ended_after(*events: dict[str, Any]) -> Answer:
    """Some events, then the server ends the stream cleanly (a watcher it closed, timeoutSeconds)."""
    return lambda h, server: _stream(h, list(events))


def dropped_after(*events: dict[str, Any]) -> Answer:
    """Some events, then the connection breaks in the middle of the answer (a proxy, a restart)."""
    return lambda h, server: _stream(h, list(events), end=False)


def held(h: BaseHTTPRequestHandler, server: ApiServer) -> None:
    """A healthy watch: the events the test publishes, until the server stops."""
    _start(h)
    sent = 0
    while not server.stopping.is_set():
        with server.lock:
            pending = server.published[sent:]
        for event in pending:
            _chunk(h, event)
            sent += 1
        server.stopping.wait(0.02)
    h.close_connection = True


def _start(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)  # as the API server streams a watch: one chunk per event
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()


def _chunk(h: BaseHTTPRequestHandler, event: dict[str, Any]) -> None:
    data = json.dumps(event).encode() + b"\n"
    h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    h.wfile.flush()


def _stream(h: BaseHTTPRequestHandler, events: list[dict[str, Any]], *, end: bool = True) -> None:
    _start(h)
    for event in events:
        _chunk(h, event)
    if end:
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
    h.close_connection = True


class ApiServer:
    """Deployments in one namespace: LISTs answered at ``rv``; watches with the scripted answers, then
    :func:`held`."""

    def __init__(self, answers: list[Answer], *, image: str = "shop/api:1", rv: int = 100) -> None:
        self.answers = list(answers)
        self.objects = [deployment(image, rv)]
        self.rv = rv
        self.lists = 0
        self.watch_rvs: list[str] = []  # the resourceVersion each watch request started from
        self.published: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                query = parse_qs(urlparse(self.path).query)
                try:
                    if query.get("watch") == ["1"]:
                        with server.lock:
                            server.watch_rvs.append(query.get("resourceVersion", [""])[0])
                            answer = server.answers.pop(0) if server.answers else held
                        answer(self, server)
                    else:
                        with server.lock:
                            server.lists += 1
                            body = json.dumps({"kind": "DeploymentList", "items": server.objects,
                                               "metadata": {"resourceVersion": str(server.rv)}}).encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def publish(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.published.append(event)

    def stop(self) -> None:
        self.stopping.set()
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Callable[..., tuple[ApiServer, Cluster]]]:
    started: list[ApiServer] = []

    def start(answers: list[Answer], **kw: Any) -> tuple[ApiServer, Cluster]:
        server = ApiServer(answers, **kw)
        started.append(server)
        kubeconfig = tmp_path / f"kubeconfig-{len(started)}"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}]}))
        return server, Cluster(kubeconfig=str(kubeconfig))

    yield start
    for server in started:
        server.stop()


def until(check: Callable[[], bool], what: Callable[[], object] = lambda: None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout}s: {what()}"
        time.sleep(0.02)


def test_a_watch_cache_behind_the_list_is_waited_for_with_backoff_not_listed(api) -> None:
    server, kube = api([too_new] * 6)
    informer = Informer(kube, NAMESPACE, "Deployment", deadline=time.monotonic() + 600).start()
    try:
        server.publish({"type": "MODIFIED", "object": deployment("shop/api:2", 101)})
        until(lambda: informer.items()["api"].images["api"] == "shop/api:2",
              lambda: (server.lists, server.watch_rvs, informer.behind))
        assert server.lists == 1  # the first one only: the cache was waited for, not answered with a LIST
        assert server.watch_rvs == ["100"] * 7  # every try from the LIST's resourceVersion
        assert informer.behind == 6
    finally:
        informer.stop()


def test_a_watch_cache_still_behind_at_the_deadline_costs_one_list(api) -> None:
    server, kube = api([too_new] * 1000)
    informer = Informer(kube, NAMESPACE, "Deployment", deadline=time.monotonic() + 1).start()
    try:
        until(lambda: server.lists == 2, lambda: (server.lists, len(server.watch_rvs)))
        assert informer.behind >= 2  # backed off between the tries, then gave up at the deadline
    finally:
        informer.stop()


def test_a_stream_the_server_ends_is_resumed_from_the_last_resource_version(api) -> None:
    server, kube = api([ended_after({"type": "MODIFIED", "object": deployment("shop/api:2", 105)}),
                        ended_after({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "111"}}})])
    informer = Informer(kube, NAMESPACE, "Deployment").start()
    try:
        server.publish({"type": "MODIFIED", "object": deployment("shop/api:3", 120)})
        until(lambda: informer.items()["api"].images["api"] == "shop/api:3", lambda: server.watch_rvs)
        assert server.watch_rvs == ["100", "105", "111"]
        assert (server.lists, informer.resumed) == (1, 2)
    finally:
        informer.stop()


def test_a_connection_dropped_mid_stream_is_resumed_without_a_list(api) -> None:
    server, kube = api([dropped_after({"type": "MODIFIED", "object": deployment("shop/api:2", 107)})])
    informer = Informer(kube, NAMESPACE, "Deployment").start()
    try:
        server.publish({"type": "MODIFIED", "object": deployment("shop/api:3", 130)})
        until(lambda: informer.items()["api"].images["api"] == "shop/api:3", lambda: server.watch_rvs)
        assert server.watch_rvs == ["100", "107"]
        assert server.lists == 1
        assert informer.error is None  # watching again: the controller's cache trusts it again
    finally:
        informer.stop()
