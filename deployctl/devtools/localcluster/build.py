"""Build the local control plane (kube-apiserver, controller-manager, scheduler, etcd, kwok) and kubectl
from Go modules.

Everything is pinned in :mod:`deployctl.devtools.localcluster.pins` and cached outside the
repo, under ``$DEPLOYCTL_CACHE`` (default ``~/.cache/deployctl``)/controlplane/<key>/bin.
A build is only made when the pins change: the cache key is derived from them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from deployctl import settings
from deployctl.devtools.localcluster import pins
from deployctl.errors import LocalClusterError

log = structlog.get_logger(__name__)

BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok", "kubectl")
_STAGING_LINE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._/-]+)\s+v0\.0\.0\s*(//.*)?$")
_ETCD_LINE = re.compile(r"^\s*go\.etcd\.io/etcd/server/v3\s+(v3\.[0-9.]+)\b")


@dataclass(frozen=True)
class ControlPlaneBinaries:
    """Where the built binaries of one pinned control plane live."""

    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    def complete(self) -> bool:
        return all(os.access(self.path(b), os.X_OK) for b in BINARIES)


def cache_root() -> Path:
    """The user-level cache directory; overridable with ``DEPLOYCTL_CACHE``."""
    env = settings.CACHE.get()
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "deployctl"


def binaries() -> ControlPlaneBinaries:
    """The binaries for the current pins (they may not be built yet)."""
    return ControlPlaneBinaries(cache_root() / "controlplane" / pins.cache_key() / "bin")


def staging_replaces(kubernetes_gomod: str, kubernetes_version: str) -> list[tuple[str, str]]:
    """The ``replace`` pairs for every ``k8s.io/* v0.0.0`` requirement of a kubernetes go.mod.

    ``v1.35.4`` maps to staging version ``v0.35.4``.
    """
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise LocalClusterError(f"kubernetes pin {kubernetes_version!r} is not of the form v1.Y.Z")
    staging_version = f"v0.{match.group(1)}.{match.group(2)}"
    modules: list[str] = []
    for line in kubernetes_gomod.splitlines():
        found = _STAGING_LINE.match(line)
        if found and found.group(1) not in modules:
            modules.append(found.group(1))
    return [(m, staging_version) for m in modules]


def etcd_version(kubernetes_gomod: str) -> str:
    """The etcd server version a kubernetes release requires (we build exactly that one)."""
    for line in kubernetes_gomod.splitlines():
        found = _ETCD_LINE.match(line)
        if found:
            return found.group(1)
    raise LocalClusterError("k8s.io/kubernetes go.mod does not require go.etcd.io/etcd/server/v3")


def generated_gomod(kubernetes_gomod: str) -> str:
    """The go.mod of the small module that builds the kubernetes binaries and etcd."""
    replaces = staging_replaces(kubernetes_gomod, pins.KUBERNETES)
    lines = [
        "module deployctl.local/controlplane",
        "",
        f"go {pins.GO_DIRECTIVE}",
        "",
        f"require k8s.io/kubernetes {pins.KUBERNETES}",
        "",
    ]
    lines += [f"replace {m} => {m} {v}" for m, v in replaces]
    return "\n".join(lines) + "\n"


def _go(args: list[str], *, cwd: Path, env: dict[str, str], logfile: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise LocalClusterError(
            "the Go toolchain is not on PATH; install Go >= 1.25 (https://go.dev/dl or your "
            "package manager) to build the local control plane"
        )
    started = time.monotonic()
    with logfile.open("a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run([go, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    log.info("controlplane.go", args=" ".join(args), seconds=round(time.monotonic() - started, 1))
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-20:]
        raise LocalClusterError(
            f"'go {' '.join(args)}' failed (exit {proc.returncode}); see {logfile}:\n" + "\n".join(tail)
        )


def build(*, force: bool = False) -> ControlPlaneBinaries:
    """Build (or reuse) the pinned control plane; returns where the binaries are."""
    target = binaries()
    if target.complete() and not force:
        log.info("controlplane.cached", bin_dir=str(target.bin_dir))
        return target
    root = target.bin_dir.parent
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    staging_bin = root / "bin.partial"
    if staging_bin.exists():
        shutil.rmtree(staging_bin)
    staging_bin.mkdir(parents=True)
    logfile = root / "build.log"
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["CGO_ENABLED"] = "0"
    started = time.monotonic()

    # Fetch kubernetes' own go.mod to learn which staging modules it replaces.
    raw = subprocess.run(
        [shutil.which("go") or "go", "mod", "download", "-json", f"k8s.io/kubernetes@{pins.KUBERNETES}"],
        cwd=src, env=env, capture_output=True, text=True,
    )
    if raw.returncode != 0:
        raise LocalClusterError(f"cannot download k8s.io/kubernetes@{pins.KUBERNETES}: {raw.stderr.strip()}")
    gomod_path = Path(json.loads(raw.stdout)["GoMod"])
    kubernetes_gomod = gomod_path.read_text()
    (src / "go.mod").write_text(generated_gomod(kubernetes_gomod))
    etcd = etcd_version(kubernetes_gomod)
    (src / "go.sum").unlink(missing_ok=True)

    packages = [
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kubectl",  # the client users of the local cluster expect, same release
        "go.etcd.io/etcd/server/v3",
    ]
    # Explicit versions: a bare `go get pkg` would upgrade to the newest release.
    versioned = [f"{p}@{etcd if p.startswith('go.etcd.io') else pins.KUBERNETES}" for p in packages]
    _go(["get", *versioned], cwd=src, env=env, logfile=logfile)

    major, minor = pins.KUBERNETES.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        f"-X k8s.io/component-base/version.{k}={v}"
        for k, v in (
            ("gitVersion", pins.KUBERNETES),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", "1970-01-01T00:00:00Z"),
        )
    )
    ldflags += " -s -w"
    for pkg in packages:
        name = "etcd" if pkg.startswith("go.etcd.io") else pkg.rsplit("/", 1)[1]
        _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(staging_bin / name), pkg],
            cwd=src, env=env, logfile=logfile)

    # kwok pins other k8s.io versions, so it is installed on its own.
    kwok_env = dict(env)
    kwok_env["GOBIN"] = str(staging_bin)
    kwok_env.pop("GOFLAGS", None)
    _go(["install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{pins.KWOK}"],
        cwd=src, env=kwok_env, logfile=logfile)

    if target.bin_dir.exists():
        shutil.rmtree(target.bin_dir)
    staging_bin.rename(target.bin_dir)
    (root / "pins.json").write_text(json.dumps(pins.as_dict(), indent=2) + "\n")
    log.info("controlplane.built", bin_dir=str(target.bin_dir), seconds=round(time.monotonic() - started, 1))
    return target
