"""`deployctl watch` under faults and hostile clients: runs that raise, a hung git server, two replicas and a
standby that gets the webhook, idle-connection floods, nested JSON, oversized and slow bodies.

Real control plane, real git repos, the controller as a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import resource
import signal
import socket
import threading
import time

import pytest

from deployctl.controller.webhook import github_signature
from tests.integration.test_controller import (
    IMAGE,
    SECRET,
    Watch,
    audit_url,
    bare,  # noqa: F401 - the same fixtures as the controller tests
    deploy,
    image_of,
    lease_holder,
    sha,
    wait_for,
    watches,  # noqa: F401
)

pytestmark = pytest.mark.integration


def events(w: Watch) -> list[dict]:
    return [json.loads(line) for line in w.log.read_text().splitlines() if line.startswith("{")]


# -- a run that raises does not stop the controller -----------------------------------------------


# Loaded by the controller's Python at startup (PYTHONPATH): a run whose desired state holds FAULT_SHA raises
# what no deployctl code raises, as a bug in a library or in deployctl would.
FAULT_INJECTION = """
import os
import deployctl.app.run as run

_run_once = run.run_once


def run_once(desired, *args, **kwargs):
    if any(t.sha == os.environ["FAULT_SHA"] for t in desired.targets):
        raise RuntimeError("injected fault")
    return _run_once(desired, *args, **kwargs)


run.run_once = run_once
"""


def test_a_run_that_raises_a_non_deployctl_error_is_logged_and_counted_and_the_next_good_commit_is_applied(
        cluster, namespace, bare, tmp_path, watches):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAULT_INJECTION)
    fault = {"PYTHONPATH": str(inject), "FAULT_SHA": sha("api-2")}
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="0.5s",
              env=fault)
    watches.append(w)
    w.wait_ready()
    wait_for("the first deploy", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}", timeout=60)

    # this error used to end the worker thread for good
    bare.commit(deploy("api", "api-2"), message="A commit whose run raises")
    wait_for("the error in /metrics",
             lambda: w.metric('deployctl_reconcile_errors_total{error="RuntimeError",stage="reconcile"}') >= 1)
    crashed = [e for e in events(w) if e["event"] == "reconcile.crashed"]
    assert crashed and crashed[0]["error_type"] == "RuntimeError"
    assert "Traceback (most recent call last)" in crashed[0]["traceback"]
    assert "injected fault" in crashed[0]["traceback"]
    assert w.get("/healthz")[0] == 200
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}"  # nothing half-applied

    bare.commit(deploy("api", "api-3"), message="Fixed")
    wait_for("the good commit applied", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-3')}",
             timeout=15)
    assert w.metric('deployctl_reconciles_total{status="error",trigger="watch"}') >= 1
    assert w.proc.poll() is None
    assert w.get("/healthz")[0] == 200
    assert w.get("/readyz")[0] == 200


class HangingGitServer:
    """Accepts connections on 127.0.0.1 and never answers: a git host that hangs mid-fetch."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def test_a_worker_stuck_in_a_hung_fetch_fails_healthz_and_readyz(cluster, tmp_path, watches):
    server = HangingGitServer()
    try:
        w = Watch(tmp_path, f"http://127.0.0.1:{server.port}/deploy.git", kubeconfig=cluster.kubeconfig,
                  audit=audit_url(tmp_path), interval="2s", extra=("--timeout", "1s"))
        watches.append(w)
        assert wait_for("the HTTP endpoint", lambda: w.get("/healthz")[0], timeout=30) == 200
        # 3 intervals + the run timeout = 7s without a finished iteration: Kubernetes restarts the pod
        wait_for("/healthz to fail", lambda: w.get("/healthz")[0] == 503, timeout=20, step=0.2)
        assert w.get("/readyz")[0] == 503
        assert "has not finished a run" in w.get("/healthz")[1]
    finally:
        server.close()


# -- two replicas: only the leader is ready, a standby hands webhooks on -------------------------------


def test_a_webhook_sent_to_the_standby_reaches_the_leader_and_the_standby_is_not_ready(
        cluster, namespace, bare, tmp_path, watches):
    a = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), name="a",
              interval="1h", lease_namespace=namespace)
    b = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), name="b",
              interval="1h", lease_namespace=namespace)
    watches += [a, b]
    holder = wait_for("a leader", lambda: lease_holder(cluster, namespace), timeout=60)  # two processes starting on a busy machine
    leader, standby = (a, b) if holder == "a" else (b, a)
    leader.wait_ready()
    wait_for("the first deploy", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}", timeout=60)
    wait_for("the standby's endpoint", lambda: standby.get("/healthz")[0] == 200, timeout=30)
    status, body = standby.get("/readyz")
    assert status == 503 and "standby" in body

    head = bare.commit(deploy("api", "api-2"), message="Deploy api 2")
    # A standby that has not read the lease yet (it may start seconds after the leader on a busy machine) answers
    # 503, never 202-and-drop; the sender retries, as GitHub does, until the standby hands the hook on.
    wait_for("the standby hands the push on", lambda: standby.github_push(head) == 202, timeout=60, step=0.2)
    # The interval is an hour: only the forwarded hook can have applied api-2.
    wait_for("api-2 applied by the leader",
             lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-2')}", timeout=60)
    assert standby.metric('deployctl_webhook_requests_total{provider="github",result="forwarded"}') == 1
    assert leader.metric('deployctl_webhook_requests_total{provider="forwarded",result="accepted"}') == 1
    assert standby.metric("deployctl_reconciles_total") == 0

    # The leader dies; until the lease runs out the standby cannot hand hooks on: 503, never 202-and-drop.
    unavailable = 'deployctl_webhook_requests_total{provider="github",result="unavailable"}'
    before = standby.metric(unavailable)
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(5)
    assert standby.github_push(head) == 503
    assert standby.metric(unavailable) == before + 1
    wait_for("the standby takes over and is ready", lambda: standby.get("/readyz")[0] == 200, timeout=20)
    head = bare.commit(deploy("api", "api-3"), message="Deploy api 3")
    assert standby.github_push(head) == 202
    wait_for("api-3 applied by the new leader",
             lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-3')}", timeout=10)


# -- the webhook server against hostile clients -------------------------------------------------------


def _low_fd_limit() -> None:  # a pod with a small open-file limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _post_raw(port: int, head: bytes, body: bytes = b"", *, timeout: float = 5.0) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head + body)
        except OSError:  # the server answered and stopped reading before the whole body was sent
            pass
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def test_300_idle_connections_do_not_keep_a_signed_push_from_being_answered(
        cluster, namespace, bare, tmp_path, watches):
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="1h",
              extra=("--header-timeout", "2s"), preexec_fn=_low_fd_limit)  # a pod with 256 open files at most
    watches.append(w)
    w.wait_ready()
    wait_for("the first deploy", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}", timeout=60)

    idle = [socket.create_connection(("127.0.0.1", w.port)) for _ in range(300)]

    def closed_by_server() -> int:
        n = 0
        for s in idle:
            s.setblocking(False)
            try:
                n += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                n += 1
        return n

    try:
        # Over the cap (a quarter of the 256 open files) the oldest idle connections are closed as soon as the
        # server takes them; the rest go when the header deadline passes.
        wait_for("the server has taken the idle connections", lambda: closed_by_server() >= 300 - 64, timeout=30,
                 step=0.05)
        head = bare.commit(deploy("api", "api-2"), message="Deploy api 2")
        assert w.github_push(head) == 202  # without the cap, accept() would fail with EMFILE: no answer at all
        wait_for("api-2 applied", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-2')}", timeout=60)
        wait_for("every idle connection closed", lambda: closed_by_server() == 300, timeout=10, step=0.2)
    finally:
        for s in idle:
            s.close()
    assert w.proc.poll() is None
    assert w.get("/healthz")[0] == 200
    capped = [e for e in events(w) if e["event"] == "http.max_connections_lowered"]
    assert capped and capped[0]["max_connections"] == 64

    # A flood of unauthenticated requests is counted in full but logged at a bounded rate.
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=5)
    flood_started = time.monotonic()
    for _ in range(300):
        conn.request("POST", "/hooks/generic", body=b"", headers={"Authorization": "Bearer wrong"})
        response = conn.getresponse()
        response.read()
        assert response.status == 401
    elapsed = time.monotonic() - flood_started
    conn.close()
    assert w.metric('deployctl_webhook_requests_total{provider="generic",result="unauthorized"}') == 300
    logged = [e for e in events(w) if e["event"] == "webhook.request" and e.get("result") == "unauthorized"]
    assert len(logged) <= 20 + 2 * elapsed + 1


def test_nested_json_gets_400_oversized_bodies_413_and_a_slow_body_408(cluster, namespace, bare, tmp_path, watches):
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="1h",
              extra=("--body-timeout", "1s"))
    watches.append(w)
    w.wait_ready()
    deep = b'{"ref": "refs/heads/main", "after": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert w.post("/hooks/github", deep, {
        "X-GitHub-Event": "push", "Content-Type": "application/json",
        "X-Hub-Signature-256": github_signature(SECRET.encode(), deep)}) == 400
    assert w.post("/hooks/generic", b"[" * 1000 + b"]" * 1000, {"Authorization": f"Bearer {SECRET}"}) == 400
    assert w.metric('deployctl_webhook_requests_total{provider="github",result="malformed"}') == 1

    auth = f"Authorization: Bearer {SECRET}\r\n".encode()
    # Content-Length over the 1 MiB cap: refused before the body is read.
    assert _post_raw(w.port, b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\n" + auth
                     + b"Content-Length: 2097152\r\n\r\n") == 413
    # Chunked, no Content-Length: refused once the cap is passed.
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    assert _post_raw(w.port, b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\n" + auth
                     + b"Transfer-Encoding: chunked\r\n\r\n", chunk * 20 + b"0\r\n\r\n") == 413
    # A body that never arrives: 408 after the body deadline, not a connection held for ever.
    # (the client waits 30 s; the server's 1 s body deadline is what answers)
    assert _post_raw(w.port, b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\n" + auth
                     + b"Content-Length: 100\r\n\r\n", b"{", timeout=30) == 408
    assert w.get("/healthz")[0] == 200


# -- the manifests route webhooks to the leader --------------------------------------------------------


def test_the_deploy_manifests_route_to_ready_pods_and_are_accepted_by_the_api_server(cluster, namespace):
    from kubernetes import client

    from tests.integration.test_controller import _manifests

    (deployment,) = _manifests("deployment.yaml")
    (service,) = _manifests("service.yaml")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    # The Service's endpoints are its ready pods; only the leader answers /readyz with 200.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert not service["spec"].get("publishNotReadyAddresses")
    # A standby never becomes ready while the old leader holds the Lease: an update replaces all pods at once.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    for doc in (deployment, service):
        doc["metadata"]["namespace"] = namespace
    with cluster.api() as api:
        client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment, dry_run="All")
        client.CoreV1Api(api).create_namespaced_service(namespace, service, dry_run="All")
