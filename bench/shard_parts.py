"""The parts of bench/shard.py: the deploy repo, a replica process, waiting under a ceiling, what the cluster
runs, a sampler of the replicas' metrics and the overlap check over the audit rows."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployctl.edges.audit.url import open_store  # noqa: E402

IMAGE = "registry.example.com/bench"
DEPLOYCTL = str(Path(sys.executable).with_name("deployctl"))
SECRET = "bench-secret"


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class Repo:
    """A bare deploy repo of ``apps`` apps in ``envs``; each app's deploy files name the SHA of its word."""

    def __init__(self, path: Path, apps: int, envs: dict[str, str]) -> None:
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        self.path, self.apps, self.envs = path, apps, envs
        self.words: dict[int, str] = {}

    def commit(self, word: str, apps: Iterable[int] | None = None) -> str:
        """A commit changing ``apps`` (default: all) in every environment."""
        for i in range(self.apps) if apps is None else apps:
            self.words[i] = word
        lines = ["version: 1", "apps:"] + [f"  app-{i:04d}: {{image: {IMAGE}/app-{i:04d}, pin: tag}}"
                                           for i in range(self.apps)]
        lines += ["environments:"] + [f"  {env}: {{namespace: {ns}}}" for env, ns in self.envs.items()]
        index = pygit2.Index()
        data = {"deployctl.yaml": "\n".join(lines) + "\n"}
        for env in self.envs:
            for i in range(self.apps):
                data[f"environments/{env}/app-{i:04d}.deploy"] = sha(f"{i}{self.words[i]}") + "\n"
        for name, text in data.items():
            index.add(pygit2.IndexEntry(name, self.repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB))
        sig = pygit2.Signature("Bench", "bench@example.com")
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        return str(self.repo.create_commit("HEAD", sig, sig, word, index.write_tree(self.repo), parents))

    def head(self) -> str:
        return str(self.repo.head.target)

    def wanted(self) -> dict[tuple[str, str], str]:
        return {(ns, f"app-{i:04d}"): f"{IMAGE}/app-{i:04d}:{sha(f'{i}{self.words[i]}')}"
                for ns in self.envs.values() for i in range(self.apps)}


class Replica:
    """One `deployctl watch` process: sharded over ``slots`` slot Leases, or (``slots`` 0) the leader mode."""

    def __init__(self, work: Path, name: str, *, repo: Path, kubeconfig: str, audit: str, namespace: str,
                 slots: int, lease: float, retry: float, interval: str = "30s", log_level: str = "warning",
                 timeout: str = "10m") -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self.log = work / f"{name}.log"
        args = [DEPLOYCTL, "--log-level", log_level, "watch", "--repo", str(repo), "--interval", interval,
                "--listen", f"127.0.0.1:{self.port}", "--audit", audit, "--kubeconfig", kubeconfig, "--no-ui",
                "--mirror-dir", str(work / f"mirror-{name}"), "--timeout", timeout,
                "--lease-namespace", namespace, "--identity", name, "--lease-duration", f"{lease}s",
                "--renew-deadline", f"{lease * 2 / 3:.1f}s", "--retry-period", f"{retry}s"]
        if slots:
            args += ["--shards", str(slots)]
        env = {**os.environ, "DEPLOYCTL_WEBHOOK_SECRET": SECRET}
        if os.environ.get("BENCH_STACKS"):  # profile: where each thread is, sampled (see bench/stacksample.py)
            args = [sys.executable, str(ROOT / "bench" / "stacksample.py"), *args[1:]]
            env["DEPLOYCTL_STACKS"] = str(work / f"{name}.stacks")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def metrics(self) -> dict[str, list[float]]:
        """Every sample of /metrics by metric name (labels dropped); empty when the replica does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[str, list[float]] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out.setdefault(name.split("{", 1)[0], []).append(float(value))
        return out

    def metric(self, name: str) -> float:
        return sum(self.metrics().get(name, []))

    def push(self, head: str) -> None:
        body = f'{{"ref": "refs/heads/main", "after": "{head}"}}'.encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/hooks/generic", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).close()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, grace: float = 30.0) -> None:
        """SIGTERM, as Kubernetes stops a pod: the run in flight ends and the replica lets its Leases go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.stop()


class Ceiling:
    """The bench's total time budget: every wait ends by it."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds
        self.seconds = seconds

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 900.0, step: float = 0.1) -> float:
        started = time.monotonic()
        ends = min(started + timeout, self.ends)
        while time.monotonic() < ends:
            if check():
                return time.monotonic() - started
            time.sleep(step)
        why = f"the ceiling of {self.seconds:.0f}s" if ends == self.ends else f"{timeout:.0f}s"
        raise SystemExit(f"timed out waiting for {what} ({why})")


def images(apps_api, namespaces: Iterable[str]) -> dict[tuple[str, str], str]:
    """(namespace, name) -> image of every Deployment, read raw (deserializing thousands is slow)."""
    out = {}
    for ns in namespaces:
        answer = apps_api.list_namespaced_deployment(ns, _preload_content=False)
        for d in json.loads(answer.data)["items"]:
            out[(ns, d["metadata"]["name"])] = d["spec"]["template"]["spec"]["containers"][0]["image"]
    return out


def settled(apps_api, namespaces: Iterable[str]) -> int:
    """How many Deployments the cluster has not yet rolled out (generation observed, one replica available)."""
    behind = 0
    for ns in namespaces:
        answer = apps_api.list_namespaced_deployment(ns, _preload_content=False)
        for d in json.loads(answer.data)["items"]:
            st = d.get("status") or {}
            if st.get("observedGeneration") != d["metadata"]["generation"] or st.get("availableReplicas") != 1 \
                    or st.get("updatedReplicas") != 1:
                behind += 1
    return behind


class Sampler:
    """Polls the running replicas' metrics in a thread and keeps the largest value of each metric seen."""

    def __init__(self, running: Callable[[], list[Replica]], names: Iterable[str], every: float = 0.5) -> None:
        self.running = running
        self.largest = dict.fromkeys(names, 0.0)
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            for r in list(self.running()):
                seen = r.metrics()
                for name in self.largest:
                    self.largest[name] = max([self.largest[name], *seen.get(name, [])])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(10)
        return self.largest


def overlap_check(url: str) -> tuple[int, int, int, dict[str, int]]:
    """(attempts, (env, app, SHA) attempted twice, pairs of one app's attempts by two tokens overlapping,
    attempts by result)."""
    store = open_store(url)
    try:
        records = store.query()
    finally:
        store.close()
    seen: dict[tuple[str, str, str], int] = {}
    by_app: dict[tuple[str, str], list] = {}
    for r in records:
        key = (r.attempt.env, r.attempt.app, r.attempt.new_sha)
        seen[key] = seen.get(key, 0) + 1
        by_app.setdefault(key[:2], []).append(r)
    twice = sum(1 for n in seen.values() if n > 1)
    overlaps = 0
    for rs in by_app.values():
        for i, a in enumerate(rs):
            for b in rs[i + 1:]:
                if (a.attempt.lock_holder or "").split(" fence=")[-1] == (b.attempt.lock_holder or "").split(" fence=")[-1]:
                    continue
                a_end = a.finished_at or a.attempt.started_at
                b_end = b.finished_at or b.attempt.started_at
                if a.attempt.started_at < b_end and b.attempt.started_at < a_end:
                    overlaps += 1
    results: dict[str, int] = {}
    for r in records:
        results[r.result or "open"] = results.get(r.result or "open", 0) + 1
    return len(records), twice, overlaps, results
