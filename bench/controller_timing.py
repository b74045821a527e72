"""Controller reaction times on the real local control plane: the figures the integration tests
no longer assert (they assert what happens; how soon depends on the machine).

    .venv/bin/python bench/controller_timing.py [--repeat 5]

1. Drift: a `deployctl watch` (interval 1 h, so only its watch can react) on one Deployment; a
   `kubectl set image`-style patch; seconds until the wanted image is back.
2. Takeover: two controllers with a 2 s lease; the leader is SIGKILLed and a commit lands; seconds
   until the standby has applied it (lease expiry + one interval + a run).
3. SIGTERM: a controller waiting for a rollout that never ends; seconds from SIGTERM to its exit.
Prints min, median and max of each. Starts its own local control plane in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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

from bench.latency import DEPLOYCTL, IMAGE, SECRET, Api, commit, config_yaml, free_port, sha  # noqa: E402
from bench.teardown import on_signal_unwind  # noqa: E402
from deployctl.devtools.localcluster import controlplane  # noqa: E402


def until(what: str, check: Callable[[], bool], timeout: float = 120, step: float = 0.01) -> float:
    """Seconds until ``check`` holds (polled every ``step``)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


def controller(work: Path, repo: Path, kubeconfig: str, name: str, *, interval: str, lease_ns: str | None = None
               ) -> subprocess.Popen[bytes]:
    args = [DEPLOYCTL, "--log-level", "warning", "watch", "--repo", str(repo), "--interval", interval,
            "--listen", f"127.0.0.1:{free_port()}", "--audit", f"sqlite:///{work / f'audit-{name}.db'}",
            "--kubeconfig", kubeconfig, "--mirror-dir", str(work / f"mirror-{name}"), "--timeout", "600s"]
    args += (["--lease-namespace", lease_ns, "--identity", name, "--lease-duration", "2s", "--renew-deadline",
              "1.5s", "--retry-period", "0.25s"] if lease_ns else ["--no-leader-election"])
    with (work / f"watch-{name}.log").open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603 - our own CLI
                                env={**os.environ, "DEPLOYCTL_WEBHOOK_SECRET": SECRET})


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def shop(api: Api, work: Path, ns: str, word: str, *, replicas: int = 0) -> tuple[pygit2.Repository, str]:
    api.create(ns, ["api"], {"api": f"{IMAGE}/api:initial"}, replicas)
    repo = pygit2.init_repository(str(work / f"{ns}.git"), bare=True, initial_head="main")
    commit(repo, {"deployctl.yaml": config_yaml(["api"], {"staging": ns}),
                  "environments/staging/api.deploy": f"{sha(word)}\n".encode()}, "deploy")
    return repo, f"{IMAGE}/api:{sha(word)}"


def drift(api: Api, work: Path, kubeconfig: str, n: int) -> float:
    ns = f"drift-{n}"
    repo, wanted = shop(api, work, ns, "drift")
    proc = controller(work, Path(repo.path), kubeconfig, ns, interval="1h")
    try:
        until("the first deploy", lambda: api.image(ns, "api") == wanted)
        time.sleep(1)  # the run that applied it has returned
        api.apps.patch_namespaced_deployment("api", ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "api", "image": f"{IMAGE}/api:by-hand"}]}}}})
        return until("the drift corrected", lambda: api.image(ns, "api") == wanted)
    finally:
        stop(proc)


def takeover(api: Api, work: Path, kubeconfig: str, n: int) -> float:
    ns = f"takeover-{n}"
    repo, wanted = shop(api, work, ns, "one")
    a = controller(work, Path(repo.path), kubeconfig, f"{ns}-a", interval="0.5s", lease_ns=ns)
    b = controller(work, Path(repo.path), kubeconfig, f"{ns}-b", interval="0.5s", lease_ns=ns)
    try:
        until("the first deploy", lambda: api.image(ns, "api") == wanted)
        from kubernetes import client

        holder = client.CoordinationV1Api(api.client).read_namespaced_lease("deployctl", ns).spec.holder_identity
        leader = a if holder.endswith("-a") else b
        leader.send_signal(signal.SIGKILL)
        leader.wait(30)
        commit(repo, {"environments/staging/api.deploy": f"{sha('two')}\n".encode()}, "deploy two")
        return until("the standby's deploy", lambda: api.image(ns, "api") == f"{IMAGE}/api:{sha('two')}")
    finally:
        stop(a, b)


def sigterm(api: Api, work: Path, kubeconfig: str, n: int) -> float:
    ns = f"term-{n}"
    api.create(ns, ["api"], {"api": f"{IMAGE}/api:initial"}, 1)
    api.apps.patch_namespaced_deployment("api", ns, {"spec": {"template": {"metadata": {"labels": {
        controlplane.NEVER_READY_LABEL: controlplane.NEVER_READY_VALUE}}}}})
    repo = pygit2.init_repository(str(work / f"{ns}.git"), bare=True, initial_head="main")
    commit(repo, {"deployctl.yaml": config_yaml(["api"], {"staging": ns}),
                  "environments/staging/api.deploy": f"{sha('never')}\n".encode()}, "deploy")
    proc = controller(work, Path(repo.path), kubeconfig, ns, interval="1h")
    try:
        until("the rollout to start", lambda: api.image(ns, "api") == f"{IMAGE}/api:{sha('never')}")
        time.sleep(1)  # waiting for the rollout
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(120)
        return time.monotonic() - started
    finally:
        stop(proc)


def main() -> None:
    on_signal_unwind()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deployctl-bench-timing-"))
    state = controlplane.up(work / "cluster")
    try:
        api = Api(state.kubeconfig)
        for name, measure in (("drift corrected", drift), ("takeover after SIGKILL", takeover),
                              ("exit after SIGTERM", sigterm)):
            seconds = [measure(api, work, state.kubeconfig, n) for n in range(args.repeat)]
            print(f"{name:24s} min {min(seconds):6.2f} s  median {statistics.median(seconds):6.2f} s  "
                  f"max {max(seconds):6.2f} s  ({args.repeat} runs)", flush=True)
    finally:
        controlplane.down(work / "cluster")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
