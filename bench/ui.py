"""Dashboard benchmark: how long one matrix snapshot, the matrix page and an app page take to serve.

    .venv/bin/python bench/ui.py [--apps 100] [--envs 3] [--records-per-target 20]

A deploy repo with ``--apps`` x ``--envs`` deploy files (pygit2) and a SQLite audit store with
``--records-per-target`` attempts each, served by a real ``deployctl ui --no-cluster`` on
127.0.0.1 (the cluster's share is one LIST per namespace and kind, measured in bench/reconcile.py).
Prints figures; it is not a timed test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pygit2  # noqa: E402

from deployctl.edges.audit.url import open_store  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.audit import Finish  # noqa: E402
from tests.fixtures.auditdata import make_attempt  # noqa: E402


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def make_repo(path: Path, apps: list[str], envs: list[str]) -> None:
    repo = pygit2.init_repository(str(path), initial_head="main")
    files = {"deployctl.yaml": "version: 1\napps:\n" + "".join(
        f"  {a}:\n    image: registry.example.com/shop/{a}\n    owner: '@team{i % 7}'\n" for i, a in enumerate(apps))
        + "environments:\n" + "".join(f"  {e}:\n    namespace: ns-{e}\n" for e in envs)}
    for e in envs:
        for a in apps:
            files[f"environments/{e}/{a}.deploy"] = sha(f"{e}{a}") + "\n"
    index = repo.index
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        index.add(name)
    index.write()
    sig = pygit2.Signature("Bench", "bench@example.com")
    repo.create_commit("HEAD", sig, sig, "bench", index.write_tree(), [])


def fill_store(url: str, apps: list[str], envs: list[str], per_target: int) -> int:
    store = open_store(url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    n = 0
    for k in range(per_target):
        attempts = [make_attempt(env=e, app=a, new_sha=sha(f"{e}{a}{k}"), started_at=t0 + timedelta(minutes=k))
                    for e in envs for a in apps]
        ids = store.start_many(attempts)
        store.finish_many([Finish(i, "succeeded") for i in ids])
        n += len(ids)
    store.close()
    return n


def timed_get(url: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--envs", type=int, default=3)
    parser.add_argument("--records-per-target", type=int, default=20)
    args = parser.parse_args()
    configure_logging("error")
    apps = [f"app{i:03d}" for i in range(args.apps)]
    envs = ["dev", "staging", "production", "eu", "us"][: args.envs]
    with tempfile.TemporaryDirectory(prefix="deployctl-bench-ui-") as tmp:
        root = Path(tmp)
        make_repo(root / "deploy", apps, envs)
        audit = f"sqlite:///{root / 'audit.db'}"
        records = fill_store(audit, apps, envs, args.records_per_target)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        exe = str(Path(sys.executable).with_name("deployctl"))
        proc = subprocess.Popen([exe, "ui", "--repo", str(root / "deploy"), "--audit", audit, "--no-cluster",
                                 "--listen", f"127.0.0.1:{port}", "--refresh", "0.2"],
                                stderr=subprocess.DEVNULL, env={**os.environ})
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            cold = []
            for _ in range(5):  # a snapshot older than --refresh: repo read + one audit query per target
                time.sleep(0.25)
                cold += timed_get(base + "/api/v1/status", 1)
            warm = timed_get(base + "/ui/", 20)
            app_page = timed_get(base + f"/ui/apps/{apps[0]}", 10)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"{args.apps} apps x {args.envs} envs, {records} audit records (SQLite)")
    print(f"  /api/v1/status, new snapshot : median {statistics.median(cold):.0f} ms (max {max(cold):.0f})")
    print(f"  /ui/ from a cached snapshot  : median {statistics.median(warm):.0f} ms (max {max(warm):.0f})")
    print(f"  /ui/apps/<app>               : median {statistics.median(app_page):.0f} ms (max {max(app_page):.0f})")


if __name__ == "__main__":
    main()
