"""deployctl beside kubectl, in one run, on one local control plane (kubectl built from the same release).

    .venv/bin/python bench/kubectl_compare.py [--apps 1000] [--changed 50]

Two namespaces of N labelled Deployments (1 replica) each, one per tool, so neither's rollouts
are in the other's way. Every figure is the wall time of the whole command (process start
included), the median of a few runs where it is cheap:

 1. no-op: `deployctl reconcile` with nothing to change, against one `kubectl get deployments`
    LIST (the floor: deployctl needs that LIST) and `kubectl apply --server-side` of the same
    manifests (the same images: nothing changes);
 2. N changed, no wait: `deployctl reconcile --no-wait` against `kubectl apply --server-side`;
 3. 50 of N changed, waiting: `deployctl reconcile` against `kubectl apply --server-side` of the
    50 manifests + `kubectl rollout status` per changed Deployment (the shell loop);
 4. N first deploy, waiting (deployctl only).

During each deployctl wait it counts the API server's own LIST and WATCH requests on
Deployments (``apiserver_request_total``): the goal is one LIST and at most one watch per
namespace and kind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.reconcile import sha, write_commit  # noqa: E402
from bench.teardown import on_signal_unwind  # noqa: E402
from deployctl.devtools.localcluster import build, controlplane  # noqa: E402
from deployctl.edges.kube.cluster import Cluster  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402

OURS, THEIRS = "cmp-deployctl", "cmp-kubectl"
IMAGE = "registry.example.com/cmp"
DEPLOYCTL = str(Path(sys.executable).with_name("deployctl"))
_METRIC = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$')


def name(i: int) -> str:
    return f"app-{i:04d}"


def manifest(namespace: str, i: int, image: str) -> dict[str, object]:
    n = name(i)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": n, "namespace": namespace, "labels": {"deployctl.dev/app": n}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": n}},
                     "template": {"metadata": {"labels": {"app": n}},
                                  "spec": {"containers": [{"name": n, "image": image}]}}}}


def image_of(i: int, version: str) -> str:
    return f"{IMAGE}/{name(i)}:{sha(f'{name(i)}-{version}')}" if version != "initial" else f"{IMAGE}/{name(i)}:initial"


def write_manifests(path: Path, namespace: str, apps: range | list[int], version: str) -> Path:
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                "items": [manifest(namespace, i, image_of(i, version)) for i in apps]}))
    return path


def config_yaml(n: int) -> bytes:
    lines = ["version: 1", "apps:"]
    for i in range(n):
        lines += [f"  {name(i)}:", f"    image: {IMAGE}/{name(i)}", "    pin: tag"]
    lines += ["environments:", "  cmp:", f"    namespace: {OURS}"]
    return ("\n".join(lines) + "\n").encode()


def deploy_files(apps: range | list[int], version: str) -> dict[str, bytes]:
    return {f"environments/cmp/{name(i)}.deploy": f"{sha(f'{name(i)}-{version}')}\n".encode() for i in apps}


def timed(cmd: list[str], env: dict[str, str] | None = None, *, check: bool = True) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - started
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return took, proc.stdout


def median(fn: Callable[[], float], runs: int = 3) -> float:
    return statistics.median(fn() for _ in range(runs))


def requests_on_deployments(kube: Cluster) -> dict[str, int]:
    """The API server's LIST and WATCH counts on namespaced Deployments so far."""
    resp = kube.transport.pool.request("GET", kube.server + "/metrics", headers=kube.transport.endpoint.headers,
                                       timeout=30.0)
    counts = {"LIST": 0, "WATCH": 0}
    for line in resp.data.decode().splitlines():
        found = _METRIC.match(line)
        if found:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group("labels")))
            if (labels.get("resource") == "deployments" and labels.get("scope") != "cluster"
                    and labels.get("verb") in counts):
                counts[labels["verb"]] += int(float(found.group("value")))
    return counts


def settle(kube: Cluster, namespace: str, timeout: float = 600) -> float:
    """Wait until every Deployment in ``namespace`` is rolled out (between cases, not measured)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        items = kube.list_kind(namespace, "Deployment")
        if all(w.observed_generation >= w.generation and w.updated_replicas >= w.replicas
               and w.available_replicas >= w.replicas and w.status_replicas <= w.replicas for w in items):
            return time.monotonic() - started
        time.sleep(1)
    raise SystemExit(f"{namespace} did not settle in {timeout}s")


def main() -> None:
    on_signal_unwind()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=50)
    parser.add_argument("--profile", action="store_true",
                        help="also profile one no-op with pyinstrument and print where its time goes")
    args = parser.parse_args()
    n, changed = args.apps, args.changed
    configure_logging("warning")
    kubectl = str(build.binaries().path("kubectl"))
    if not os.access(kubectl, os.X_OK):
        raise SystemExit(f"no kubectl at {kubectl}: run 'deployctl localcluster build' (it builds kubectl too)")
    work = Path(tempfile.mkdtemp(prefix="deployctl-cmp-"))
    state = controlplane.up(work / "cluster")
    rows: list[tuple[str, str, str, str]] = []
    try:
        kc = state.kubeconfig
        kube = Cluster(kubeconfig=kc)
        k = [kubectl, "--kubeconfig", kc]
        env = dict(os.environ, DEPLOYCTL_AUDIT=f"sqlite:///{work / 'audit.db'}", DEPLOYCTL_LOG_LEVEL="error")
        repo_path = str(work / "deploy")
        ours = [DEPLOYCTL, "reconcile", "--repo", repo_path, "--kubeconfig", kc, "-o", "json", "--timeout", "600"]

        started = time.perf_counter()
        for ns in (OURS, THEIRS):
            kube.ensure_namespace(ns)
            timed([*k, "create", "-f", str(write_manifests(work / f"{ns}-initial.json", ns, range(n), "initial"))])
        settle(kube, OURS)
        settle(kube, THEIRS)
        print(f"setup: 2 x {n} Deployments created and available in {time.perf_counter() - started:.1f}s")
        repo = pygit2.init_repository(repo_path, bare=True)

        # 4. first deploy of N, waiting (deployctl only)
        write_commit(repo, {"deployctl.yaml": config_yaml(n), **deploy_files(range(n), "v1")}, "v1")
        before = requests_on_deployments(kube)
        first, out = timed(ours, env)
        first_requests = {v: c - before[v] for v, c in requests_on_deployments(kube).items()}
        first_result = json.loads(out)

        # 1. no-op
        noop = median(lambda: timed(ours, env)[0])
        _, out = timed(ours, env)
        noop_result = json.loads(out)
        get = median(lambda: timed([*k, "get", "deployments", "-n", THEIRS, "-l", "deployctl.dev/app", "-o",
                                    "json"])[0])
        same = write_manifests(work / "same.json", THEIRS, range(n), "initial")
        apply_noop = median(lambda: timed([*k, "apply", "--server-side", "-f", str(same)])[0])
        if args.profile:
            profile = work / "noop-profile.txt"
            subprocess.run([sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(profile), DEPLOYCTL,
                            *ours[1:]], env=env, capture_output=True, check=False)
            print(f"\nno-op profile (pyinstrument, whole command):\n{profile.read_text()}")
        rows.append((f"no-op of {n} apps", f"{noop:.2f} s", f"`get` LIST {get:.2f} s; `apply --server-side` "
                     f"{apply_noop:.2f} s", f"{noop / get:.2f}x the LIST; {noop / apply_noop:.2f}x apply"))

        # 2. N changed, no wait
        write_commit(repo, deploy_files(range(n), "v2"), "v2")
        nowait, _ = timed([*ours, "--no-wait"], env)
        settle(kube, OURS)  # deployctl's 1,000 rollouts must not slow kubectl's applies down
        theirs_v2 = write_manifests(work / "v2.json", THEIRS, range(n), "v2")
        apply_all, _ = timed([*k, "apply", "--server-side", "--force-conflicts", "-f", str(theirs_v2)])
        rows.append((f"{n} changed, no wait", f"{nowait:.2f} s", f"`apply --server-side` {apply_all:.2f} s",
                     f"{nowait / apply_all:.2f}x"))
        settle(kube, THEIRS)

        # 3. 50 of N changed, waiting
        some = list(range(0, n, max(1, n // changed)))[:changed]
        write_commit(repo, deploy_files(some, "v3"), "v3")
        before = requests_on_deployments(kube)
        waited, out = timed(ours, env)
        wait_requests = {v: c - before[v] for v, c in requests_on_deployments(kube).items()}
        wait_result = json.loads(out)
        theirs_v3 = write_manifests(work / "v3.json", THEIRS, some, "v3")

        def kubectl_loop() -> float:
            t = time.perf_counter()
            timed([*k, "apply", "--server-side", "--force-conflicts", "-f", str(theirs_v3)])
            for i in some:
                timed([*k, "rollout", "status", "-n", THEIRS, f"deployment/{name(i)}", "--timeout", "600s"])
            return time.perf_counter() - t

        loop = kubectl_loop()
        rows.append((f"{len(some)} of {n} changed, wait for rollout", f"{waited:.2f} s",
                     f"apply + `rollout status` loop {loop:.2f} s", f"{waited / loop:.2f}x"))
        rows.append((f"{n} first deploy with wait", f"{first:.1f} s", "", "goal: 60 s"))

        print(f"\ndeployctl vs kubectl ({Path(kubectl).name} of the same release), {n} apps in one namespace each\n")
        print("| case | deployctl | kubectl | ratio |")
        print("| --- | --- | --- | --- |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print(f"\nno-op: client-side requests {noop_result.get('requests')}, writes {sum(c for v, c in (noop_result.get('requests') or {}).items() if v in ('PATCH', 'PUT', 'POST', 'DELETE'))}")
        for label, result, reqs in (("first deploy", first_result, first_requests),
                                    (f"{len(some)} changed", wait_result, wait_requests)):
            print(f"{label} with wait: client-side requests {result.get('requests')}; the API server counted on "
                  f"Deployments LIST {reqs['LIST']}, WATCH {reqs['WATCH']} (1 namespace x 1 kind)")
    finally:
        controlplane.down(work / "cluster")


if __name__ == "__main__":
    main()
