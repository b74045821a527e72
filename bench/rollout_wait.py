"""How much a rollout wait adds to the cluster's own rollout time, measured by an independent watcher.

    .venv/bin/python bench/rollout_wait.py [--sizes 50,1000] [--rounds 2] [--no-kubectl]

On the local control plane (kwok nodes), one namespace of N labelled Deployments (1 replica) per size.
Each round commits a change to all N and runs ``deployctl reconcile`` through the library entry the
CLI uses (``app/run.py:run_reconcile``, SQLite audit, waiting for the rollouts). Meanwhile a separate
process holds its own watch on Deployments (the kubernetes client, not deployctl's code) and stamps,
with the machine's monotonic clock, when each Deployment's new generation first appears (the patch
seen) and when its rollout is complete by ``kubectl rollout status``'s rule (observedGeneration >=
generation, updated == available == replicas, no old replicas).

Printed per size and round:
- cluster: first patch seen -> last rollout complete (the watcher's times, over the apps deployctl
  reports as rolled out; the others are counted and named, never waited for);
- deployctl: first patch seen -> reconcile returned, and the overhead: (deployctl / cluster) - 1;
  plus the whole call (reading the repo, observing, planning: before the first patch);
- for 50 apps, kubectl (built from the same Kubernetes module) doing ``apply --server-side`` + a
  ``rollout status`` loop on a third namespace, against the same watcher.
The machine's load average is printed with every figure (2 shared cores: the cluster's controllers,
the watcher and deployctl share them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.reconcile import sha, write_commit  # noqa: E402
from deployctl.app.run import run_reconcile  # noqa: E402
from deployctl.devtools import manifests  # noqa: E402
from deployctl.devtools.localcluster import build, controlplane  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.audit_target import AuditTarget  # noqa: E402
from deployctl.reconcile.options import ReconcileOptions, Selection, Timing  # noqa: E402

IMAGE = "registry.example.com/rw"
SELECTOR = "deployctl.dev/app"


def name(i: int) -> str:
    return f"app-{i:04d}"


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- the independent watcher (its own process) -----------------------------------------------------

def watcher(kubeconfig: str) -> None:
    """Watch every labelled Deployment; print one JSON line per event: time, namespace, name,
    generation, complete (kubectl rollout status's rule)."""
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(config_file=kubeconfig))
    listed = apps.list_deployment_for_all_namespaces(label_selector=SELECTOR, _preload_content=False)
    rv = json.loads(listed.data)["metadata"]["resourceVersion"]
    print(json.dumps({"ready": True}), flush=True)
    while True:
        resp = apps.list_deployment_for_all_namespaces(
            label_selector=SELECTOR, watch=True, resource_version=rv, allow_watch_bookmarks=True,
            timeout_seconds=3600, _preload_content=False)
        buf = b""
        for chunk in resp.stream(65536):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                now = time.monotonic()
                event = json.loads(line)
                obj = event["object"]
                meta = obj.get("metadata") or {}
                rv = meta.get("resourceVersion") or rv
                if event["type"] not in ("ADDED", "MODIFIED"):
                    continue
                spec, status = obj.get("spec") or {}, obj.get("status") or {}
                want = spec.get("replicas", 1)
                complete = (status.get("observedGeneration", 0) >= meta["generation"]
                            and status.get("updatedReplicas", 0) == want
                            and status.get("availableReplicas", 0) == want
                            and status.get("replicas", 0) == status.get("updatedReplicas", 0))
                print(json.dumps({"t": now, "ns": meta["namespace"], "name": meta["name"],
                                  "gen": meta["generation"], "complete": complete}), flush=True)


@dataclass
class Watched:
    """What the watcher process reported, read by a thread of this process (its times are its own)."""

    proc: subprocess.Popen[str]
    events: list[dict[str, object]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if event.get("ready"):
                self.ready.set()
            else:
                self.events.append(event)

    def generations(self, namespace: str) -> dict[str, int]:
        gens: dict[str, int] = {}
        for e in list(self.events):
            if e["ns"] == namespace:
                gens[str(e["name"])] = max(gens.get(str(e["name"]), 0), int(e["gen"]))  # type: ignore[call-overload]
        return gens

    def rollouts(self, namespace: str, before: dict[str, int], names: list[str],
                 timeout: float = 900) -> tuple[float, float]:
        """(first new generation seen, last rollout complete) of ``names`` past their ``before`` generation."""
        ceiling = time.monotonic() + timeout
        while time.monotonic() < ceiling:
            seen: dict[str, float] = {}
            done: dict[str, float] = {}
            for e in list(self.events):
                n = str(e["name"])
                if e["ns"] != namespace or int(e["gen"]) <= before.get(n, 0):  # type: ignore[call-overload]
                    continue
                seen.setdefault(n, float(e["t"]))  # type: ignore[arg-type]
                if e["complete"]:
                    done.setdefault(n, float(e["t"]))  # type: ignore[arg-type]
                else:
                    done.pop(n, None)  # a newer generation after a completed one
            if all(n in done for n in names):
                return min(seen.values()), max(done[n] for n in names)
            time.sleep(0.2)
        raise SystemExit(f"{namespace}: the watcher did not see every rollout complete in {timeout}s")


# -- the runs ----------------------------------------------------------------------------------------

def create(kubeconfig: str, namespace: str, n: int) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    api.configuration.connection_pool_maxsize = 16
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    apps = client.AppsV1Api(api)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: apps.create_namespaced_deployment(
            namespace, manifests.deployment(namespace, name(i), image=f"{IMAGE}/{name(i)}:initial"),
            _preload_content=False), range(n)))


def config_yaml(n: int, envs: dict[str, str]) -> bytes:
    lines = ["version: 1", "apps:"]
    for i in range(n):
        lines += [f"  {name(i)}:", f"    image: {IMAGE}/{name(i)}", "    pin: tag"]
    lines.append("environments:")
    for env, ns in envs.items():
        lines += [f"  {env}:", f"    namespace: {ns}"]
    return ("\n".join(lines) + "\n").encode()


def deploy_files(env: str, n: int, version: str) -> dict[str, bytes]:
    return {f"environments/{env}/{name(i)}.deploy": f"{sha(f'{name(i)}-{version}')}\n".encode() for i in range(n)}


def kubectl_manifests(path: Path, namespace: str, n: int, version: str) -> Path:
    items = []
    for i in range(n):
        d = manifests.deployment(namespace, name(i), image=f"{IMAGE}/{name(i)}:{sha(f'{name(i)}-{version}')}")
        items.append(d)
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,1000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-kubectl", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    configure_logging("warning")
    kubectl = str(build.binaries().path("kubectl"))
    use_kubectl = not args.no_kubectl and os.access(kubectl, os.X_OK)
    envs = {f"e{n}": f"rw-{n}" for n in sizes}
    work = Path(tempfile.mkdtemp(prefix="deployctl-rw-"))
    state = controlplane.up(work / "cluster")
    watch: Watched | None = None
    try:
        kc = state.kubeconfig
        proc = subprocess.Popen([sys.executable, __file__, "--watcher", kc], stdout=subprocess.PIPE, text=True)
        watch = Watched(proc)
        threading.Thread(target=watch.read, daemon=True).start()
        if not watch.ready.wait(60):
            raise SystemExit("the watcher did not start")
        t = time.monotonic()
        for n, ns in zip(sizes, envs.values(), strict=True):
            create(kc, ns, n)
        if use_kubectl:
            create(kc, "rw-kubectl", 50)
        repo_path = str(work / "deploy")
        repo = pygit2.init_repository(repo_path, bare=True)
        files = {"deployctl.yaml": config_yaml(max(sizes), envs)}
        for n, env in zip(sizes, envs, strict=True):
            files.update(deploy_files(env, n, "v0"))
        write_commit(repo, files, "v0")
        audit = AuditTarget.at(f"sqlite:///{work / 'audit.db'}")

        def reconcile(env: str) -> tuple[float, float, list[str], str]:
            """(started, returned, the apps applied and rolled out, what went wrong with the others)."""
            options = ReconcileOptions(selection=Selection(envs=(env,)), timing=Timing(timeout=900))
            started = time.monotonic()
            result = run_reconcile(repo=repo_path, options=options, kubeconfig=kc, audit=audit)
            returned = time.monotonic()
            ok = [o.app for o in result.outcomes if o.result == "succeeded"]
            failed = [o for o in result.outcomes if o.result != "succeeded"]
            why = f"; {len(failed)} not rolled out, e.g. {failed[0].app}: {failed[0].message}" if failed else ""
            return started, returned, ok, why

        for env in envs:
            reconcile(env)  # deployctl takes the Deployments over (its annotations): not measured
        print(f"setup: {sum(sizes)} Deployments created, taken over and rolled out in {time.monotonic() - t:.0f}s "
              f"({load()})\n")
        print("| apps | round | cluster (watcher) | deployctl after first patch | overhead | whole call | load |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for n, (env, ns) in zip(sizes, envs.items(), strict=True):
            names = [name(i) for i in range(n)]
            for r in range(1, args.rounds + 1):
                write_commit(repo, deploy_files(env, n, f"v{r}"), f"v{r} {env}")
                time.sleep(1)  # the watcher has seen the setup's last events
                before = watch.generations(ns)
                started, returned, ok, why = reconcile(env)
                if not ok:
                    print(f"| {n} | {r} | | none rolled out{why} | | | {load()} |", flush=True)
                    continue
                first, last = watch.rollouts(ns, before, ok)
                cluster, ours = last - first, returned - first
                print(f"| {n} | {r} | {cluster:.2f} s | {ours:.2f} s ({len(ok)} rolled out{why}) "
                      f"| {ours / cluster - 1:+.1%} | {returned - started:.2f} s | {load()} |", flush=True)
            if n == 50 and use_kubectl:
                for r in range(1, args.rounds + 1):
                    before = watch.generations("rw-kubectl")
                    path = kubectl_manifests(work / f"k{r}.json", "rw-kubectl", 50, f"v{r}")
                    k = [kubectl, "--kubeconfig", kc]
                    started = time.monotonic()
                    subprocess.run([*k, "apply", "--server-side", "--force-conflicts", "-f", str(path)],
                                   capture_output=True, check=True)
                    for nm in names:
                        subprocess.run([*k, "rollout", "status", "-n", "rw-kubectl", f"deployment/{nm}",
                                        "--timeout", "600s"], capture_output=True, check=True)
                    returned = time.monotonic()
                    first, last = watch.rollouts("rw-kubectl", before, names)
                    cluster, theirs = last - first, returned - first
                    print(f"| 50, kubectl apply + rollout status loop | {r} | {cluster:.2f} s | {theirs:.2f} s "
                          f"| {theirs / cluster - 1:+.1%} | {returned - started:.2f} s | {load()} |", flush=True)
        print("\ncluster: the watcher's first new generation seen -> last rollout complete; deployctl: that first "
              "patch seen -> reconcile returned (overhead = deployctl / cluster - 1); whole call: from reading the "
              "repo to the return")
    finally:
        if watch is not None:
            watch.proc.kill()
            watch.proc.wait()
        controlplane.down(work / "cluster")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--watcher"]:
        watcher(sys.argv[2])
    else:
        main()
