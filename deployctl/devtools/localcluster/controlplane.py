"""Run a real local control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok.

Everything binds to 127.0.0.1 on free ports; certificates, keys, the admin kubeconfig, the
state file (pids and ports) and one log file per component live in one directory. Stopping
kills only the processes this directory's state file names, after checking each pid still
runs the binary we started.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from deployctl.devtools.localcluster import build, pki
from deployctl.devtools.localcluster.bootstrap import (
    FAKE_NODE,
    Api,
    create_fake_node,
    node_ready,
    write_kubeconfig,
)
from deployctl.errors import LocalClusterError

log = structlog.get_logger(__name__)

NEVER_READY_LABEL = "deployctl.dev/simulate"
NEVER_READY_VALUE = "never-ready"
"""Pods labelled ``deployctl.dev/simulate=never-ready`` are ignored by kwok: they are scheduled
but never become Running or Ready, so a Deployment using them ends with ProgressDeadlineExceeded."""

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def default_dir() -> Path:
    return build.cache_root() / "localcluster"


@dataclass
class ClusterState:
    """What ``up`` started, persisted in ``<dir>/state.json``."""

    dir: str
    kubeconfig: str
    server: str
    pids: dict[str, int] = field(default_factory=dict)
    binaries: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0


def _free_port() -> int:
    """A free loopback port below Linux's ephemeral range (32768+), so that an outgoing
    connection's source port cannot take it while a component restarts."""
    for _ in range(50):
        port = random.randint(20000, 32000)  # noqa: S311 - not security sensitive
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _state_path(directory: Path) -> Path:
    return directory / "state.json"


def read_state(directory: Path) -> ClusterState | None:
    path = _state_path(directory)
    if not path.exists():
        return None
    try:
        return ClusterState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise LocalClusterError(f"{path}: unreadable state file ({exc}); remove it and retry") from exc


def _pid_runs(pid: int, binary: str) -> bool:
    """True when ``pid`` is alive and still runs ``binary`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    return cmdline == binary


def _wait(what: str, check: Any, *, timeout: float, logs: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise LocalClusterError(
                    f"{name} exited with code {proc.returncode} while waiting for {what}; see {logs / (name + '.log')}"
                )
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise LocalClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs are in {logs}")


def up(directory: Path | None = None, *, build_if_missing: bool = True, timeout: float = 90.0,
       extra_args: dict[str, list[str]] | None = None) -> ClusterState:
    """Start the control plane in ``directory`` (reusing it if it already runs) and wait until it is usable.
    ``extra_args`` adds flags per component (e.g. ``{"kube-apiserver": ["--watch-cache-sizes=..."]}``)."""
    directory = (directory or default_dir()).resolve()
    existing = read_state(directory)
    if existing and all(_pid_runs(p, existing.binaries.get(n, "")) for n, p in existing.pids.items()):
        log.info("localcluster.already_running", dir=str(directory))
        return existing
    if existing:
        down(directory)

    bins = build.binaries()
    if not bins.complete():
        if not build_if_missing:
            raise LocalClusterError(
                f"the control plane binaries are not built ({bins.bin_dir}); run 'deployctl localcluster build' "
                "(needs the Go toolchain; the first build takes several minutes)"
            )
        bins = build.build()

    started = time.monotonic()
    logs = directory / "logs"
    for sub in ("logs", "etcd"):
        path = directory / sub
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    keys = pki.generate(directory / "pki")
    ports = {
        "etcd": _free_port(),
        "etcd-peer": _free_port(),
        "apiserver": _free_port(),
        "kwok": _free_port(),
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfig = directory / "kubeconfig"
    write_kubeconfig(kubeconfig, server, keys)
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"

    commands: dict[str, list[str]] = {
        "etcd": [
            str(bins.path("etcd")),
            f"--data-dir={directory / 'etcd'}",
            "--name=default",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",  # a throwaway local cluster: durability is not worth the latency
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(bins.path("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={directory / 'pki'}",
            f"--tls-cert-file={keys.serving_crt}",
            f"--tls-private-key-file={keys.serving_key}",
            f"--client-ca-file={keys.ca_crt}",
            f"--service-account-key-file={keys.sa_pub}",
            f"--service-account-signing-key-file={keys.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=2000",
            "--max-mutating-requests-inflight=1000",
            "--profiling=false",
            "--v=0",
        ],
        "kube-controller-manager": [
            str(bins.path("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--service-account-private-key-file={keys.sa_key}",
            f"--root-ca-file={keys.ca_crt}",
            "--use-service-account-credentials=false",
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
            "--concurrent-deployment-syncs=20",
            "--concurrent-replicaset-syncs=20",
            "--concurrent-statefulset-syncs=10",
            "--profiling=false",
        ],
        "kube-scheduler": [
            str(bins.path("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
            "--profiling=false",
        ],
        "kwok": [
            str(bins.path("kwok")),
            f"--kubeconfig={kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--config={Path(__file__).with_name('kwok-stages.yaml')}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
        ],
    }

    for component, flags in (extra_args or {}).items():
        commands[component] = [*commands[component], *flags]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    state = ClusterState(
        dir=str(directory), kubeconfig=str(kubeconfig), server=server, ports=ports, started_at=time.time()
    )

    def launch(name: str) -> None:
        out = (logs / f"{name}.log").open("ab")
        procs[name] = subprocess.Popen(  # noqa: S603 - our own pinned binaries, no shell
            commands[name], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=directory,
        )
        out.close()
        state.pids[name] = procs[name].pid
        state.binaries[name] = commands[name][0]
        _state_path(directory).write_text(json.dumps(asdict(state), indent=2) + "\n")

    try:
        launch("etcd")
        _wait("etcd health", lambda: _http_ok(f"{etcd_url}/health"), timeout=timeout, logs=logs, procs=procs)
        launch("kube-apiserver")
        api = Api(server, keys)
        _wait("kube-apiserver /readyz", lambda: api.request("GET", "/readyz")[0] == 200,
              timeout=timeout, logs=logs, procs=procs)
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            launch(name)
        create_fake_node(api)
        _wait(f"node {FAKE_NODE} Ready", lambda: node_ready(api), timeout=timeout, logs=logs, procs=procs)
        _wait("the default service account", lambda: api.request(
            "GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
            timeout=timeout, logs=logs, procs=procs)
    except BaseException:
        down(directory)
        raise
    log.info("localcluster.up", dir=str(directory), server=server, seconds=round(time.monotonic() - started, 2))
    return state


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback http
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def down(directory: Path | None = None, *, grace: float = 10.0) -> list[str]:
    """Stop the processes ``up`` started in ``directory``; returns the names of those it stopped."""
    directory = (directory or default_dir()).resolve()
    state = read_state(directory)
    if state is None:
        return []
    stopped: list[str] = []
    order = [n for n in reversed(COMPONENTS) if n in state.pids]
    for name in order:
        pid = state.pids[name]
        if _pid_runs(pid, state.binaries.get(name, "")):
            os.kill(pid, signal.SIGTERM)
            stopped.append(name)
    deadline = time.monotonic() + grace
    for name in order:
        pid = state.pids[name]
        while _pid_runs(pid, state.binaries.get(name, "")) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_runs(pid, state.binaries.get(name, "")):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
    _state_path(directory).unlink(missing_ok=True)
    log.info("localcluster.down", dir=str(directory), stopped=stopped)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def restart_component(directory: Path, name: str) -> None:
    """Kill one component and start it again with the same flags (for tests of API-server restarts)."""
    state = read_state(directory)
    if state is None or name not in state.pids:
        raise LocalClusterError(f"no running {name} in {directory}")
    cmdline = Path(f"/proc/{state.pids[name]}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    argv = [a.decode() for a in cmdline]
    os.kill(state.pids[name], signal.SIGKILL)
    while _pid_runs(state.pids[name], state.binaries[name]):
        time.sleep(0.05)
    _reap(state.pids[name])
    # A dying process still holds its listening socket after its cmdline is gone: start the new one
    # only once the port can be bound again (else it fails with "address already in use").
    port = state.ports.get({"kube-apiserver": "apiserver"}.get(name, name))
    deadline = time.monotonic() + 15
    while port and time.monotonic() < deadline and not _port_free(port):
        time.sleep(0.05)
    out = (directory / "logs" / f"{name}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603
        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=directory
    )
    out.close()
    state.pids[name] = proc.pid
    _state_path(directory).write_text(json.dumps(asdict(state), indent=2) + "\n")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def env_lines(directory: Path | None = None) -> str:
    """Shell lines that point kubectl and deployctl at the running local cluster and put the
    kubectl built from the same pinned release first on PATH."""
    import shlex

    directory = (directory or default_dir()).resolve()
    state = read_state(directory)
    if state is None:
        raise LocalClusterError(f"no local cluster runs in {directory}; start one with 'deployctl localcluster up'")
    lines = [f"export KUBECONFIG={shlex.quote(state.kubeconfig)}"]
    bins = build.binaries()
    if os.access(bins.path("kubectl"), os.X_OK):
        lines.append(f'export PATH={shlex.quote(str(bins.bin_dir))}:"$PATH"')
    return "\n".join(lines)



def status(directory: Path | None = None) -> dict[str, object]:
    """Where the local cluster is and which of its components run (for ``localcluster status``)."""
    directory = (directory or default_dir()).resolve()
    state = read_state(directory)
    if state is None:
        return {"dir": str(directory), "running": False, "server": None, "kubeconfig": None, "components": {}}
    components = {name: _pid_runs(pid, state.binaries.get(name, "")) for name, pid in state.pids.items()}
    return {"dir": str(directory), "running": bool(components) and all(components.values()),
            "server": state.server, "kubeconfig": state.kubeconfig, "components": components}
