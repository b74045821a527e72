"""The controller's HTTP server under hostile clients: push latency beside idle connections, log growth.

    .venv/bin/python bench/webhook_server.py [--idle 300] [--bad 1000]

Starts `deployctl watch` (interval 1 h, no leader election, no audit) on a one-commit bare repo,
with a kubeconfig whose server refuses connections (only the HTTP server is measured) and an
open-file limit of 256 (a small pod), then prints:

1. signed push -> 202 latency (20 pushes): alone, and beside N idle connections;
2. how many of the idle connections the server closed at once (over the cap) and after the
   header deadline (--header-timeout 2s);
3. log bytes written for M unauthenticated requests (one keep-alive connection).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployctl.controller.webhook import github_signature  # noqa: E402

DEPLOYCTL = str(Path(sys.executable).with_name("deployctl"))
SECRET = "bench-secret"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: x, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: x, user: u}}]
current-context: c
"""


def repo(path: Path) -> None:
    r = pygit2.init_repository(str(path), bare=True)
    sig = pygit2.Signature("bench", "bench@example.com")
    files = {"deployctl.yaml": b"version: 1\napps:\n  api: {image: r.example/api, pin: tag}\n"
             b"environments:\n  staging: {namespace: staging}\n",
             "environments/staging/api.deploy": b"a" * 40 + b"\n"}
    root = r.TreeBuilder()
    env = r.TreeBuilder()
    staging = r.TreeBuilder()
    staging.insert("api.deploy", r.create_blob(files["environments/staging/api.deploy"]), pygit2.GIT_FILEMODE_BLOB)
    env.insert("staging", staging.write(), pygit2.GIT_FILEMODE_TREE)
    root.insert("environments", env.write(), pygit2.GIT_FILEMODE_TREE)
    root.insert("deployctl.yaml", r.create_blob(files["deployctl.yaml"]), pygit2.GIT_FILEMODE_BLOB)
    r.create_commit("refs/heads/main", sig, sig, "bench", root.write(), [])


def push(port: int) -> float:
    body = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.perf_counter()
    conn.request("POST", "/hooks/github", body=body, headers={
        "X-GitHub-Event": "push", "Content-Type": "application/json",
        "X-Hub-Signature-256": github_signature(SECRET.encode(), body)})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    assert response.status == 202, response.status
    return elapsed


def closed(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            n += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            n += 1
    return n


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"p50 {statistics.median(values) * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=300)
    parser.add_argument("--bad", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo(work / "deploy.git")
        (work / "kubeconfig").write_text(KUBECONFIG)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = work / "watch.log"

        def low_fd_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        with log.open("wb") as out:
            proc = subprocess.Popen(
                [DEPLOYCTL, "--log-level", "info", "watch", "--repo", str(work / "deploy.git"), "--interval", "1h",
                 "--listen", f"127.0.0.1:{port}", "--no-audit", "--no-leader-election", "--kubeconfig",
                 str(work / "kubeconfig"), "--mirror-dir", str(work / "mirror"), "--header-timeout", "2s"],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=low_fd_limit,
                env={**os.environ, "DEPLOYCTL_WEBHOOK_SECRET": SECRET})
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    push(port)
                    break
                except (OSError, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            alone = [push(port) for _ in range(20)]
            print(f"signed push -> 202, no other connections: {ms(alone)}")
            idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.idle)]
            time.sleep(0.2)
            beside = [push(port) for _ in range(20)]
            print(f"signed push -> 202, beside {args.idle} idle connections (open-file limit 256: cap 64): {ms(beside)}")
            print(f"idle connections closed by the server: {closed(idle)} at once (over the cap)", end="")
            time.sleep(3)
            print(f", {closed(idle)} after the 2 s header deadline")
            for s in idle:
                s.close()
            before = log.stat().st_size
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            started = time.perf_counter()
            for _ in range(args.bad):
                conn.request("POST", "/hooks/generic", body=b"", headers={"Authorization": "Bearer wrong"})
                conn.getresponse().read()
            elapsed = time.perf_counter() - started
            conn.close()
            grown = log.stat().st_size - before
            print(f"{args.bad} unauthenticated requests in {elapsed:.2f}s: log grew {grown} bytes "
                  f"({grown / args.bad:.0f} bytes per request)")
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
