"""What the per-app locks (Lease deployctl-lock-<app>) cost a no-op run, on the real local control plane.

    .venv/bin/python bench/applock.py [--apps 100] [--runs 5]

Three environments (one namespace each) of N labelled Deployments, reconciled once; then the
no-op reconcile (nothing to change) is timed with the locks and without them, and the Lease requests
are printed. (The app locks are taken only for apps written, so a no-op run sends none; the environment
lock they replaced cost 2 GETs + 2 PUTs per environment and run.)
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.teardown import on_signal_unwind  # noqa: E402
from deployctl.app.run import run_reconcile  # noqa: E402
from deployctl.devtools.localcluster import controlplane  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.audit_target import AUDIT_OFF  # noqa: E402
from deployctl.reconcile.options import Locking, ReconcileOptions, Timing  # noqa: E402

ENVS = {"staging": "lock-staging", "canary": "lock-canary", "production": "lock-production"}
IMAGE = "registry.example.com/bench"


def files(n: int) -> dict[str, bytes]:
    lines = ["version: 1", "apps:"] + [f"  app-{i:03d}: {{image: {IMAGE}/app-{i:03d}, pin: tag}}" for i in range(n)]
    lines += ["environments:"] + [f"  {env}: {{namespace: {ns}}}" for env, ns in ENVS.items()]
    out = {"deployctl.yaml": ("\n".join(lines) + "\n").encode()}
    for env in ENVS:
        for i in range(n):
            out[f"environments/{env}/app-{i:03d}.deploy"] = hashlib.sha1(f"app-{i}".encode()).hexdigest().encode()
    return out


def commit(path: Path, data: dict[str, bytes]) -> None:
    repo = pygit2.init_repository(str(path), bare=True)
    index = pygit2.Index()
    for name, blob in data.items():
        index.add(pygit2.IndexEntry(name, repo.create_blob(blob), pygit2.enums.FileMode.BLOB))
    sig = pygit2.Signature("Bench", "bench@example.com")
    repo.create_commit("HEAD", sig, sig, "bench", index.write_tree(repo), [])


def main() -> None:
    on_signal_unwind()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    configure_logging("warning")
    work = Path(tempfile.mkdtemp(prefix="deployctl-bench-lock-"))
    state = controlplane.up(work / "cluster")
    try:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=state.kubeconfig)
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        for ns in ENVS.values():
            core.create_namespace({"metadata": {"name": ns}})
            for i in range(args.apps):
                name = f"app-{i:03d}"
                apps.create_namespaced_deployment(ns, {
                    "metadata": {"name": name, "labels": {"deployctl.dev/app": name}},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                             "template": {"metadata": {"labels": {"app": name}},
                                          "spec": {"containers": [{"name": name, "image": f"{IMAGE}/x:0"}]}}}},
                    _preload_content=False)
        commit(work / "deploy.git", files(args.apps))
        repo = str(work / "deploy.git")
        first = run_reconcile(repo=repo, kubeconfig=state.kubeconfig, audit=AUDIT_OFF,
                              options=ReconcileOptions(timing=Timing(timeout=600)))
        print(f"first reconcile: {len(first.outcomes)} env/apps, exit {first.exit_code}, {first.seconds:.1f}s")
        for lock in (True, False):
            times, requests = [], {}
            for _ in range(args.runs):
                started = time.perf_counter()
                result = run_reconcile(repo=repo, kubeconfig=state.kubeconfig, audit=AUDIT_OFF,
                                       options=ReconcileOptions(timing=Timing(timeout=600), locking=Locking(enabled=lock)))
                times.append(time.perf_counter() - started)
                requests = dict(result.requests)
                assert result.exit_code == 0 and result.writes() == 0
            print(f"no-op reconcile, 3 envs x {args.apps} apps, lock={'on ' if lock else 'off'}: median "
                  f"{statistics.median(times) * 1000:.0f} ms over {args.runs} runs; requests {requests}")
    finally:
        controlplane.down(work / "cluster")


if __name__ == "__main__":
    main()
