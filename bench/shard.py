"""Sharded `deployctl watch` (--shards) on the real local control plane and a real PostgreSQL.

    .venv/bin/python bench/shard.py [--apps 50] [--envs 2] [--replicas 1,2,4] [--slots 32]

Prints, for each replica count: the time from a push (one webhook to one replica) to every app-environment
running a commit that changes all of them, and the RSS of each replica. Then, with the largest count:
failover (SIGKILL one replica, push, time until every app is at the push), graceful handover (SIGTERM one,
time until the others hold every slot), and the overlap check over the audit rows (no (env, app, SHA)
attempted twice; no two attempts of one app by different tokens overlapping in time). The keys moved from
3 to 4 replicas is computed by the claim rule itself over the same keys and over 10,000.

The issue's sizes (2,500 apps x 4 environments, 1/2/4 replicas) need a larger machine than 2 shared cores:
pass --apps 2500 --envs 4 there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployctl.devtools.localcluster import controlplane  # noqa: E402
from deployctl.edges.audit.url import open_store  # noqa: E402
from deployctl.rules.shards import keys_moved, settle  # noqa: E402
from tests.fixtures.postgres import PostgresServer, _bindir  # noqa: E402

IMAGE = "registry.example.com/bench"
DEPLOYCTL = str(Path(sys.executable).with_name("deployctl"))
SECRET = "bench-secret"


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class Repo:
    def __init__(self, path: Path, apps: int, envs: dict[str, str]) -> None:
        self.repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
        self.path, self.apps, self.envs = path, apps, envs

    def commit(self, word: str) -> str:
        lines = ["version: 1", "apps:"] + [f"  app-{i:04d}: {{image: {IMAGE}/app-{i:04d}, pin: tag}}"
                                           for i in range(self.apps)]
        lines += ["environments:"] + [f"  {env}: {{namespace: {ns}}}" for env, ns in self.envs.items()]
        index = pygit2.Index()
        data = {"deployctl.yaml": "\n".join(lines) + "\n"}
        for env in self.envs:
            for i in range(self.apps):
                data[f"environments/{env}/app-{i:04d}.deploy"] = sha(f"{i}{word}") + "\n"
        for name, text in data.items():
            index.add(pygit2.IndexEntry(name, self.repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB))
        sig = pygit2.Signature("Bench", "bench@example.com")
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        return str(self.repo.create_commit("HEAD", sig, sig, word, index.write_tree(self.repo), parents))

    def wanted(self, word: str) -> dict[tuple[str, str], str]:
        return {(ns, f"app-{i:04d}"): f"{IMAGE}/app-{i:04d}:{sha(f'{i}{word}')}"
                for ns in self.envs.values() for i in range(self.apps)}


class Replica:
    def __init__(self, work: Path, name: str, *, repo: Path, kubeconfig: str, audit: str, namespace: str,
                 slots: int, lease: float, retry: float, log_level: str = "warning") -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self.log = work / f"{name}.log"
        args = [DEPLOYCTL, "--log-level", log_level, "watch", "--repo", str(repo), "--interval", "1h",
                "--listen", f"127.0.0.1:{self.port}", "--audit", audit, "--kubeconfig", kubeconfig, "--no-ui",
                "--mirror-dir", str(work / f"mirror-{name}"), "--timeout", "10m", "--shards", str(slots),
                "--lease-namespace", namespace, "--identity", name, "--lease-duration", f"{lease}s",
                "--renew-deadline", f"{lease * 2 / 3:.1f}s", "--retry-period", f"{retry}s"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "DEPLOYCTL_WEBHOOK_SECRET": SECRET})

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))

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


def wait(what: str, check, timeout: float = 900.0, step: float = 0.1) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(step)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def held(replicas: list[Replica]) -> float:
    return sum(r.metric("deployctl_shard_slots_held") for r in replicas)


def images(apps_api, namespaces) -> dict[tuple[str, str], str]:
    out = {}
    for ns in namespaces:
        for d in apps_api.list_namespaced_deployment(ns).items:
            out[(ns, d.metadata.name)] = d.spec.template.spec.containers[0].image
    return out


def overlap_check(url: str) -> tuple[int, int, int]:
    """(attempts, (env, app, SHA) attempted twice, pairs of one app's attempts by two tokens overlapping)."""
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
    return len(records), twice, overlaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--envs", type=int, default=2)
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--retry", type=float, default=2.0)
    parser.add_argument("--log-level", default="warning", help="the replicas' log level (their logs stay in the "
                        "work directory when a wait times out)")
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]

    keys = [(f"env-{e}", f"app-{i:04d}") for e in range(args.envs) for i in range(args.apps)]
    big = [(f"env-{e}", f"app-{i:04d}") for e in range(4) for i in range(2500)]
    three = settle(args.slots, ["r1", "r2", "r3"])
    four = settle(args.slots, ["r1", "r2", "r3", "r4"], three)
    print(f"keys moved 3 -> 4 replicas ({args.slots} slots): {keys_moved(keys, args.slots, three, four):.3f} of "
          f"{len(keys)} keys, {keys_moved(big, args.slots, three, four):.3f} of {len(big)} (goal <= {1.3 / 4:.3f})")

    bindir = _bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found")
    work = Path(tempfile.mkdtemp(prefix="deployctl-bench-shard-"))
    pg = PostgresServer(bindir)
    base = pg.start()
    state = controlplane.up(work / "cluster")
    running: list[Replica] = []
    try:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=state.kubeconfig)
        core, apps_api = client.CoreV1Api(api), client.AppsV1Api(api)
        envs = {f"env-{e}": f"shard-env-{e}" for e in range(args.envs)}
        core.create_namespace({"metadata": {"name": "shard-leases"}})
        for ns in envs.values():
            core.create_namespace({"metadata": {"name": ns}})
            for i in range(args.apps):
                name = f"app-{i:04d}"
                apps_api.create_namespaced_deployment(ns, {
                    "metadata": {"name": name, "labels": {"deployctl.dev/app": name}},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                             "template": {"metadata": {"labels": {"app": name}},
                                          "spec": {"containers": [{"name": name, "image": f"{IMAGE}/x:0"}]}}}},
                    _preload_content=False)
        repo = Repo(work / "deploy.git", args.apps, envs)
        import psycopg

        word = 0
        for n in counts:
            db = f"bench_{n}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
            url = base.rsplit("/", 1)[0] + "/" + db
            word += 1
            repo.commit(f"-{word}")
            leases_ns = f"shard-leases-{n}"
            core.create_namespace({"metadata": {"name": leases_ns}})
            running = [Replica(work, f"n{n}-r{i}", repo=repo.path, kubeconfig=state.kubeconfig, audit=url,
                               namespace=leases_ns, slots=args.slots, lease=args.lease, retry=args.retry,
                               log_level=args.log_level)
                       for i in range(n)]
            wait("every slot held", lambda rs=running: held(rs) == args.slots)
            target = repo.wanted(f"-{word}")
            wait("the first commit", lambda t=target: images(apps_api, envs.values()) == t)
            word += 1
            head = repo.commit(f"-{word}")
            target = repo.wanted(f"-{word}")
            running[0].push(head)
            seconds = wait("the pushed commit", lambda t=target: images(apps_api, envs.values()) == t)
            rss = ", ".join(f"{r.rss_mb():.0f}" for r in running)
            print(f"{n} replica(s), {len(keys)} app-environments: push -> all applied {seconds:.1f}s; RSS MB {rss}")
            if n == max(counts) and n > 1:
                victim = running.pop()
                victim.proc.kill()
                victim.proc.wait(10)
                word += 1
                head = repo.commit(f"-{word}")
                target = repo.wanted(f"-{word}")
                killed_at = time.monotonic()
                running[0].push(head)
                taken: list[float] = []

                def failed_over(t=target, rs=running, taken=taken, killed_at=killed_at) -> bool:
                    if not taken and held(rs) == args.slots:
                        taken.append(time.monotonic() - killed_at)
                    return bool(taken) and images(apps_api, envs.values()) == t

                seconds = wait("failover", failed_over)
                print(f"failover after SIGKILL of 1 of {n}: the others hold every slot after {taken[0]:.1f}s (goal <= "
                      f"lease {args.lease:.0f}s + 2 retry periods {2 * args.retry:.0f}s); push -> all applied "
                      f"{seconds:.1f}s (the runs in flight, then a run of the slots taken)")
                if len(running) > 1:
                    leaving = running.pop()
                    leaving.proc.send_signal(signal.SIGTERM)
                    seconds = wait("handover", lambda rs=running: held(rs) == args.slots, step=0.05)
                    leaving.proc.wait(30)
                    print(f"graceful handover on SIGTERM: the others hold every slot after {seconds:.2f}s (goal <= 3s)")
            for r in running:
                r.stop()
            running = []
            attempts, twice, overlaps = overlap_check(url)
            print(f"  audit: {attempts} attempts, {twice} (env, app, SHA) attempted twice, "
                  f"{overlaps} overlapping attempts of one app by two tokens")
    finally:
        for r in running:
            r.stop()
        controlplane.down(work / "cluster")
        pg.stop()


if __name__ == "__main__":
    main()
