"""Reconcile benchmark on the real local control plane: 1,000 apps x 3 environments.

    .venv/bin/python bench/reconcile.py [--apps 1000]

Prints, for 3 namespaces with 1 labelled Deployment (1 replica) per app each:
 1. a no-op reconcile: time in process, wall time of the whole `deployctl reconcile` command,
    API requests by verb (counted in the client);
 2. 1,000 apps changed in one commit with --no-wait, against a bare kubernetes-client loop
    sending the same 1,000 image patches, and the throughput ratio;
 3. 1,000 apps changed, waiting for every rollout to finish.
Apps use `pin: tag` (no registry in this benchmark; bench/registry.py measures resolution).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.teardown import on_signal_unwind  # noqa: E402
from deployctl.devtools import manifests  # noqa: E402
from deployctl.devtools.localcluster import controlplane  # noqa: E402
from deployctl.edges.git.repo import read_desired_state  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.reconcile import reconciler as rec  # noqa: E402
from deployctl.reconcile.options import ReconcileOptions, Selection, Timing  # noqa: E402

ENVS = {"staging": "bench-staging", "canary": "bench-canary", "production": "bench-production"}
IMAGE = "registry.example.com/bench"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def app_name(i: int) -> str:
    return f"app-{i:04d}"


def write_commit(repo: pygit2.Repository, files: dict[str, bytes], message: str) -> str:
    """Commit ``files`` on top of HEAD (or as the first commit) straight into the object database."""
    try:
        parent = repo.head.peel(pygit2.Commit)
        base = parent.tree
        parents = [parent.id]
    except pygit2.GitError:
        base = None
        parents = []
    index = pygit2.Index()
    if base is not None:
        index.read_tree(base)
    for path, data in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), pygit2.enums.FileMode.BLOB))
    tree = index.write_tree(repo)
    sig = pygit2.Signature("Bench", "bench@example.com")
    return str(repo.create_commit("HEAD", sig, sig, message, tree, parents))


def config_yaml(n: int) -> bytes:
    lines = ["version: 1", "apps:"]
    for i in range(n):
        lines += [f"  {app_name(i)}:", f"    image: {IMAGE}/{app_name(i)}", "    pin: tag"]
    lines.append("environments:")
    for env, ns in ENVS.items():
        lines += [f"  {env}:", f"    namespace: {ns}"]
    return ("\n".join(lines) + "\n").encode()


def deploy_files(n: int, envs: list[str], version: str) -> dict[str, bytes]:
    return {
        f"environments/{env}/{app_name(i)}.deploy": f"{sha(f'{app_name(i)}-{version}')}\n".encode()
        for env in envs for i in range(n)
    }


def create_workloads(kubeconfig: str, n: int) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=kubeconfig)
    api_client.configuration.connection_pool_maxsize = 32
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    for ns in ENVS.values():
        core.create_namespace({"metadata": {"name": ns}})

    def create(args: tuple[str, int]) -> None:
        ns, i = args
        name = app_name(i)
        apps.create_namespaced_deployment(ns, manifests.deployment(ns, name, image=f"{IMAGE}/{name}:initial"),
                                          _preload_content=False)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, [(ns, i) for ns in ENVS.values() for i in range(n)]))


def bare_patch_loop(kubeconfig: str, namespace: str, n: int, version: str) -> float:
    """The same image patches, one by one, with the kubernetes client and nothing else."""
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(config_file=kubeconfig))
    started = time.perf_counter()
    for i in range(n):
        name = app_name(i)
        apps.patch_namespaced_deployment(name, namespace, {"spec": {"template": {"spec": {"containers": [
            {"name": name, "image": f"{IMAGE}/{name}:{sha(f'{name}-{version}')}"}]}}}}, _preload_content=False)
    return time.perf_counter() - started


def run(kubeconfig: str, repo_path: str, *, envs: tuple[str, ...] = (), wait: bool = True, timeout: float = 300.0,
        concurrency: int = 16) -> rec.ReconcileResult:
    desired = read_desired_state(repo_path)
    pool = rec.ClusterPool(kubeconfig=kubeconfig)
    options = ReconcileOptions(selection=Selection(envs=envs),
                               timing=Timing(wait=wait, timeout=timeout, concurrency=concurrency))
    return rec.Reconciler(desired, pool, options).run()


def main() -> None:
    on_signal_unwind()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=1000)
    args = parser.parse_args()
    n = args.apps
    configure_logging("warning")
    work = Path(tempfile.mkdtemp(prefix="deployctl-bench-"))
    state = controlplane.up(work / "cluster")
    try:
        kubeconfig = state.kubeconfig
        t = time.perf_counter()
        create_workloads(kubeconfig, n)
        print(f"setup: {3 * n} Deployments created in {time.perf_counter() - t:.1f}s")
        repo = pygit2.init_repository(str(work / "deploy"), bare=True)
        write_commit(repo, {"deployctl.yaml": config_yaml(n), **deploy_files(n, list(ENVS), "v1")}, "v1")
        t = time.perf_counter()
        first = run(kubeconfig, str(work / "deploy"), timeout=900, concurrency=32)
        print(f"setup: first reconcile of {3 * n} targets: {time.perf_counter() - t:.1f}s, "
              f"exit {first.exit_code}")

        # 1. no-op
        t = time.perf_counter()
        noop = run(kubeconfig, str(work / "deploy"))
        in_process = time.perf_counter() - t
        env = dict(os.environ, DEPLOYCTL_AUDIT=f"sqlite:///{work / 'audit.db'}")
        cmd = [str(Path(sys.executable).with_name("deployctl")), "reconcile", "--repo", str(work / "deploy"),
               "--kubeconfig", kubeconfig, "-o", "json"]
        subprocess.run(cmd, env=env, capture_output=True, check=False)  # warm the page cache once
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
        print(f"\n1. no-op reconcile, 3 namespaces x {n} apps")
        print(f"   in process: {in_process:.3f}s   whole command: {wall:.3f}s (exit {proc.returncode})")
        print(f"   API requests by verb: {dict(noop.requests)}   writes: {noop.writes()}   "
              f"(LIST per namespace per kind: {noop.requests.get('GET', 0) / (3 * 2):.0f})")

        # 2. 1,000 changed, --no-wait, vs a bare loop
        write_commit(repo, deploy_files(n, ["staging"], "v2"), "v2 staging")
        t = time.perf_counter()
        nowait = run(kubeconfig, str(work / "deploy"), envs=("staging",), wait=False, concurrency=16)
        ours = time.perf_counter() - t
        applied = sum(1 for o in nowait.outcomes if o.result == "applied")
        bare = bare_patch_loop(kubeconfig, ENVS["canary"], n, "bare")
        print(f"\n2. {n} apps changed, --no-wait")
        print(f"   deployctl: {ours:.2f}s for {applied} applies ({applied / ours:.0f}/s)   "
              f"bare client loop: {bare:.2f}s ({n / bare:.0f}/s)   ratio: {(applied / ours) / (n / bare):.2f}x")

        # 3. 1,000 changed, waiting for every rollout
        write_commit(repo, deploy_files(n, ["production"], "v3"), "v3 production")
        t = time.perf_counter()
        waited = run(kubeconfig, str(work / "deploy"), envs=("production",), timeout=900, concurrency=16)
        full = time.perf_counter() - t
        ok = sum(1 for o in waited.outcomes if o.result == "succeeded")
        starts = [o.started_at for o in waited.outcomes if o.started_at]
        ends = [o.finished_at for o in waited.outcomes if o.finished_at]
        applied_within = (max(starts) - min(starts)).total_seconds() if starts else 0.0
        print(f"\n3. {n} apps changed, waiting for all rollouts: {full:.1f}s ({ok} succeeded, "
              f"exit {waited.exit_code}, requests {dict(waited.requests)})")
        if starts and ends:
            print(f"   every apply sent within {applied_within:.1f}s of the first; the last rollout finished "
                  f"{(max(ends) - min(starts)).total_seconds():.1f}s after the first apply (the rest is the "
                  "cluster's controllers, scheduler and kwok rolling out on the same 2 cores)")
    finally:
        controlplane.down(work / "cluster")


if __name__ == "__main__":
    main()
