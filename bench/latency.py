"""Controller benchmark on the real local control plane: push-to-patch latency and memory.

    .venv/bin/python bench/latency.py [--commits 50] [--apps 1000]

1. Webhook: a `deployctl watch` (interval 1 h, so only webhooks trigger) on a bare deploy repo
   with 10 apps; 50 commits, each changing one app, pushed one by one, each followed by a
   signed GitHub push webhook. Latency = from the commit landing in the repo to the new image
   being visible in the Deployment (polled every 5 ms). Prints p50, p95, max.
2. Polling: the same 50 commits with no webhook and --interval 1s.
3. Memory: a controller watching 1,000 apps x 3 environments (3,000 Deployments with 0
   replicas, already in sync), interval 1 s; RSS (VmRSS, and the peak VmHWM) after 10
   reconciles.
Starts its own local control plane in a temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.teardown import on_signal_unwind  # noqa: E402
from deployctl.controller.webhook import github_signature  # noqa: E402
from deployctl.devtools.localcluster import controlplane  # noqa: E402

DEPLOYCTL = str(Path(sys.executable).with_name("deployctl"))
IMAGE = "registry.example.com/bench"
SECRET = "bench-secret"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commit(repo: pygit2.Repository, files: dict[str, bytes], message: str) -> str:
    try:
        parent = repo.head.peel(pygit2.Commit)
        base, parents = parent.tree, [parent.id]
    except pygit2.GitError:
        base, parents = None, []
    index = pygit2.Index()
    if base is not None:
        index.read_tree(base)
    for path, data in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    sig = pygit2.Signature("Bench", "bench@example.com")
    return str(repo.create_commit("HEAD", sig, sig, message, index.write_tree(repo), parents))


def config_yaml(apps: list[str], envs: dict[str, str]) -> bytes:
    lines = ["version: 1", "apps:"]
    for app in apps:
        lines += [f"  {app}:", f"    image: {IMAGE}/{app}", "    pin: tag"]
    lines.append("environments:")
    for env, ns in envs.items():
        lines += [f"  {env}:", f"    namespace: {ns}"]
    return ("\n".join(lines) + "\n").encode()


class Api:
    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client, config

        self.client = config.new_client_from_config(config_file=kubeconfig)
        self.client.configuration.connection_pool_maxsize = 32
        self.core = client.CoreV1Api(self.client)
        self.apps = client.AppsV1Api(self.client)

    def image(self, ns: str, name: str) -> str:
        body = json.loads(self.apps.read_namespaced_deployment(name, ns, _preload_content=False).data)
        return str(body["spec"]["template"]["spec"]["containers"][0]["image"])

    def create(self, ns: str, names: list[str], images: dict[str, str], replicas: int) -> None:
        self.core.create_namespace({"metadata": {"name": ns}})

        def one(name: str) -> None:
            self.apps.create_namespaced_deployment(ns, {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "labels": {"deployctl.dev/app": name}},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": name, "image": images[name]}]}}},
            }, _preload_content=False)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, names))


class Watch:
    def __init__(self, work: Path, repo: Path, kubeconfig: str, name: str, interval: str) -> None:
        self.port = free_port()
        self.log = work / f"watch-{name}.log"
        args = [DEPLOYCTL, "--log-level", "warning", "watch", "--repo", str(repo), "--interval", interval,
                "--listen", f"127.0.0.1:{self.port}", "--audit", f"sqlite:///{work / f'audit-{name}.db'}",
                "--kubeconfig", kubeconfig, "--mirror-dir", str(work / f"mirror-{name}"),
                "--no-leader-election"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "DEPLOYCTL_WEBHOOK_SECRET": SECRET})

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"deployctl watch exited:\n{self.log.read_text()}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise SystemExit("deployctl watch never became ready")

    def reconciles(self) -> float:
        _, text = self.get("/metrics")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("deployctl_reconciles_total"))

    def push(self, after: str) -> None:
        body = json.dumps({"ref": "refs/heads/main", "after": after}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/hooks/github", data=body, method="POST", headers={
            "X-GitHub-Event": "push", "Content-Type": "application/json",
            "X-Hub-Signature-256": github_signature(SECRET.encode(), body)})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 202, r.status

    def rss(self) -> tuple[int, int]:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def latency_run(api: Api, work: Path, kubeconfig: str, *, mode: str, commits: int) -> list[float]:
    ns = f"bench-{mode}"
    apps = [f"app-{i:02d}" for i in range(10)]
    repo_path = work / f"deploy-{mode}.git"
    repo = pygit2.init_repository(str(repo_path), bare=True, initial_head="main")
    commit(repo, {"deployctl.yaml": config_yaml(apps, {"staging": ns}),
                  **{f"environments/staging/{a}.deploy": f"{sha(a + '-0')}\n".encode() for a in apps}}, "start")
    api.create(ns, apps, {a: f"{IMAGE}/{a}:{sha(a + '-0')}" for a in apps}, replicas=1)
    watch = Watch(work, repo_path, kubeconfig, mode, "1h" if mode == "webhook" else "1s")
    latencies: list[float] = []
    try:
        watch.wait_ready()
        for i in range(commits):
            app = apps[i % len(apps)]
            before = watch.reconciles()
            version = f"{app}-{i + 1}"
            head = commit(repo, {f"environments/staging/{app}.deploy": f"{sha(version)}\n".encode()}, version)
            pushed = time.perf_counter()
            if mode == "webhook":
                watch.push(head)
            want = f"{IMAGE}/{app}:{sha(version)}"
            while api.image(ns, app) != want:
                time.sleep(0.005)
            latencies.append(time.perf_counter() - pushed)
            # The next push comes after this deploy's reconcile finished (its rollout confirmed).
            deadline = time.monotonic() + 60
            while watch.reconciles() <= before and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        watch.stop()
    return latencies


def memory_run(api: Api, work: Path, kubeconfig: str, n: int) -> tuple[int, int, float]:
    envs = {"staging": "mem-staging", "canary": "mem-canary", "production": "mem-production"}
    apps = [f"app-{i:04d}" for i in range(n)]
    images = {a: f"{IMAGE}/{a}:{sha(a)}" for a in apps}
    t = time.perf_counter()
    for ns in envs.values():
        api.create(ns, apps, images, replicas=0)
    print(f"memory setup: {len(envs) * n} Deployments created in {time.perf_counter() - t:.1f}s")
    repo_path = work / "deploy-memory.git"
    repo = pygit2.init_repository(str(repo_path), bare=True, initial_head="main")
    files = {"deployctl.yaml": config_yaml(apps, envs)}
    files.update({f"environments/{env}/{a}.deploy": f"{sha(a)}\n".encode() for env in envs for a in apps})
    commit(repo, files, "start")
    watch = Watch(work, repo_path, kubeconfig, "memory", "1s")
    try:
        watch.wait_ready()
        started = time.perf_counter()
        while watch.reconciles() < 10:
            time.sleep(0.1)
        per_run = (time.perf_counter() - started) / 9
        rss, peak = watch.rss()
    finally:
        watch.stop()
    return rss, peak, per_run


def main() -> None:
    on_signal_unwind()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--apps", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deployctl-bench-latency-"))
    state = controlplane.up(work / "cluster")
    try:
        api = Api(state.kubeconfig)
        for mode in ("webhook", "polling"):
            lat = latency_run(api, work, state.kubeconfig, mode=mode, commits=args.commits)
            print(f"{mode:8s} ({len(lat)} commits, one app each): push -> patch in cluster "
                  f"p50 {statistics.median(lat) * 1000:.0f} ms, p95 {percentile(lat, 95) * 1000:.0f} ms, "
                  f"max {max(lat) * 1000:.0f} ms")
        rss, peak, per_run = memory_run(api, work, state.kubeconfig, args.apps)
        print(f"memory: watching {args.apps} apps x 3 environments: RSS {rss} MB (peak {peak} MB) "
              f"after 10 reconciles; a no-op reconcile every {per_run:.2f}s")
    finally:
        controlplane.down(work / "cluster")


if __name__ == "__main__":
    main()
