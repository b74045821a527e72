"""`make demo`: deployctl end to end on this machine, with real parts only.

1. a local control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok);
2. a local OCI registry (Debian's docker-registry) holding one image per commit SHA;
3. a deploy repo made from the project's example ``deployctl.yaml`` and ``environments/``;
4. the labelled workloads the cluster owner creates (Deployments with deployctl.dev/app);
5. ``deployctl validate``, ``plan`` and ``reconcile`` (staging first, then production, which
   requires staging), a new deploy commit reconciled as an update, ``status`` and ``history``;
6. verification against a real Prometheus (:mod:`deployctl.devtools.demo_verify`): one deploy verified
   and promoted, one that fails verification in staging and is held back from production;
7. a timeline with a product metric and the verifications marked;
8. ``deployctl ui`` on the demo data until Ctrl-C (``--no-ui`` or ``CI=true`` skip it).

Everything lives in ``.demo/``; ``make clean`` removes it. Run: ``python -m deployctl.devtools.demo``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import click
import pygit2

from deployctl.devtools import demo_verify
from deployctl.devtools.localcluster import controlplane

ROOT = Path.cwd()
DEMO = ROOT / ".demo"
EXAMPLE_REGISTRY = "registry.example.com"


def step(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def sh(*args: str, check: bool = True, env: dict[str, str] | None = None) -> int:
    """Run a deployctl command the way a user would, showing it first."""
    click.secho("$ deployctl " + " ".join(args), fg="cyan")
    exe = Path(sys.executable).with_name("deployctl")
    proc = subprocess.run([str(exe), *args], env={**os.environ, **(env or {})}, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: 'deployctl {' '.join(args)}' exited {proc.returncode}")
    return proc.returncode


# -- a local registry ---------------------------------------------------------------------------


def start_registry(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("demo: docker-registry is missing; run 'make system-deps' (Debian package docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {workdir / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (workdir / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/v2/")
            if conn.getresponse().status == 200:
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: the registry did not start; see {workdir / 'registry.log'}")


def push_image(host: str, repository: str, tag: str) -> str:
    """Push a one-layer image built from ``tag`` (as an app's CI would) and return its digest."""
    hostname, port = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(hostname, int(port))

    def blob(data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        conn.request("POST", f"/v2/{repository}/blobs/uploads/", body=b"", headers={"Content-Length": "0"})
        resp = conn.getresponse()
        resp.read()
        location = resp.getheader("Location") or ""
        if resp.status != 202 or not location:
            raise SystemExit(f"demo: starting a blob upload to {repository} failed: HTTP {resp.status}")
        path = location.split(host, 1)[-1] if "://" in location else location
        conn.request("PUT", f"{path}{'&' if '?' in path else '?'}digest={digest}", body=data,
                     headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise SystemExit(f"demo: pushing a blob to {repository} failed: HTTP {resp.status}")
        return digest, len(data)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        content = f"built from {tag}\n".encode()
        info = tarfile.TarInfo("VERSION")
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()]}}).encode()
    config_digest, config_size = blob(config)
    layer_digest, layer_size = blob(layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                    "size": layer_size}],
    }).encode()
    conn.request("PUT", f"/v2/{repository}/manifests/{tag}", body=manifest,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 201:
        raise SystemExit(f"demo: pushing {repository}:{tag} failed: HTTP {resp.status}")
    return resp.getheader("Docker-Content-Digest") or ""


# -- the deploy repo ----------------------------------------------------------------------------


def commit_files(repo: pygit2.Repository, files: dict[str, bytes], message: str, author: str) -> str:
    index = repo.index
    index.read()  # other commands (promote --commit) may have committed since
    for path, data in files.items():
        target = Path(repo.workdir) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        index.add(path)
    index.write()
    tree = index.write_tree()
    sig = pygit2.Signature(author, f"{author.split()[0].lower()}@example.com")
    parents = [] if repo.head_is_unborn else [repo.head.target]
    return str(repo.create_commit("HEAD", sig, sig, message, tree, parents))


def main() -> None:
    from deployctl.log import configure_logging
    from deployctl.rules.deployfile import parse_deploy_file, previous_shas

    configure_logging("warning")
    started = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    step("1. A local control plane (built from pinned Go modules, cached in ~/.cache/deployctl)")
    controlplane.down(DEMO / "cluster")  # a fresh cluster, so the story starts from the beginning
    state = controlplane.up(DEMO / "cluster")
    click.echo(f"kubeconfig: {state.kubeconfig}")
    env = {"KUBECONFIG": state.kubeconfig, "DEPLOYCTL_AUDIT": f"sqlite:///{DEMO / 'audit.db'}"}
    (DEMO / "audit.db").unlink(missing_ok=True)

    step("2. A local OCI registry with one image per commit, as each app's CI would push")
    registry_dir = DEMO / "registry"
    if registry_dir.exists():
        shutil.rmtree(registry_dir)
    registry, host = start_registry(registry_dir)
    try:
        files = {"deployctl.yaml": (ROOT / "deployctl.yaml").read_bytes()}
        for path in sorted((ROOT / "environments").rglob("*.deploy")):
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
        files = {p: d.replace(EXAMPLE_REGISTRY.encode(), host.encode()) for p, d in files.items()}
        pushed = 0
        new_web_sha = hashlib.sha1(b"web: one-click reorder", usedforsecurity=False).hexdigest()
        for name, data in files.items():
            if not name.endswith(".deploy"):
                continue
            app = Path(name).stem
            parsed = parse_deploy_file(data, path=name)
            for sha in {parsed.sha, *previous_shas(data)} if parsed.sha else previous_shas(data):
                push_image(host, f"shop/{app}", sha)
                pushed += 1
        push_image(host, "shop/web", new_web_sha)
        click.echo(f"registry at {host}: pushed {pushed + 1} images")

        step("3. The deploy repo: the example deployctl.yaml and environments/ (images on the local registry)")
        repo_dir = DEMO / "deploy-repo"
        if repo_dir.exists():
            shutil.rmtree(repo_dir)
        repo = pygit2.init_repository(str(repo_dir), initial_head="main")
        # Production's SHAs ran in staging first: promotion gates count only what was the first line
        # of staging's deploy file in an earlier commit.
        earlier = {p.replace("/production/", "/staging/"): d for p, d in files.items() if "/production/" in p}
        commit_files(repo, {**files, **earlier}, "Deploy the shop to staging\n", "Dana Deployer")
        commit_files(repo, files, "Deploy the shop to staging and production\n\nReviewed-by: Rae Reviewer "
                     "<rae@example.com>\n", "Dana Deployer")
        sh("validate", "--repo", str(repo_dir))

        step("4. The cluster owner labels the workloads deployctl may manage (deployctl.dev/app=<app>)")
        create_workloads(state.kubeconfig)

        step("5. Plan, then reconcile staging (CI runs this on merge)")
        sh("plan", "--repo", str(repo_dir), env=env)
        sh("reconcile", "--repo", str(repo_dir), "--env", "staging", "--timeout", "120", env=env)

        step("6. Promote staging to production: a one-line change per app, reviewed, then reconciled")
        sh("promote", "--all", "--from", "staging", "--to", "production", "--repo", str(repo_dir), "--commit",
           "-m", "Release 42", env=env)
        sh("diff", "--repo", str(repo_dir), "--base", "HEAD~1", "--head", "HEAD", env=env)
        sh("reconcile", "--repo", str(repo_dir), "--timeout", "120", env=env)

        step("7. A reviewed PR prepends a new web SHA to staging; the merge is reconciled")
        web = repo_dir / "environments/staging/web.deploy"
        commit_files(repo, {"environments/staging/web.deploy":
                            f"{new_web_sha}\n* Basket: one-click reorder\n".encode() + web.read_bytes()},
                     "staging: deploy web one-click reorder\n\nReviewed-by: Rae Reviewer <rae@example.com>\n",
                     "Sam Engineer")
        sh("plan", "--repo", str(repo_dir), "--env", "staging", env=env)
        sh("reconcile", "--repo", str(repo_dir), "--timeout", "120", env=env)
        sh("reconcile", "--repo", str(repo_dir), env=env)  # nothing changed: zero writes

        step("8. Where things stand, and what happened")
        sh("status", "--repo", str(repo_dir), env=env)
        sh("history", env=env, check=False)

        step("9. Verify each deploy against its metrics (a real Prometheus); production takes only verified SHAs")
        demo_verify.run(repo_dir=repo_dir, apps=("api", "worker", "web"), env=env, workdir=DEMO / "prometheus",
                        commit=lambda files, message, author: commit_files(repo, files, message, author),
                        push=lambda repository, tag: push_image(host, repository, tag), sh=sh)

        step("10. Deploys over a product metric (docs/analytics.md): a timeline with an overlay and verifications")
        metric = write_demo_metric(DEMO / "audit.db", DEMO / "basket_reorders.csv")
        chart = DEMO / "timeline.html"
        sh("timeline", "--overlay", f"csv={metric}", "--title", "Deploys and basket reorders",
           "--out", str(chart), env=env)
        click.echo(f"timeline with overlay: {chart}  (open it in a browser; metric: {metric})")
    finally:
        registry.terminate()
        registry.wait(10)
    click.secho(f"\ndemo finished in {time.monotonic() - started:.0f}s. The cluster is still running:", bold=True)
    click.echo(f"  export KUBECONFIG={state.kubeconfig}")
    click.echo("  deployctl localcluster down --dir .demo/cluster   # or: make clean")
    if "--no-ui" not in sys.argv[1:] and not os.environ.get("CI"):
        serve_dashboard(repo_dir, env)


def serve_dashboard(repo_dir: Path, env: dict[str, str]) -> None:
    """The dashboard for the demo data, until Ctrl-C (skipped with --no-ui or in CI)."""
    import socket

    step("11. The dashboard: what runs where, what changed, what may be promoted (Ctrl-C to stop)")
    with socket.socket() as s:
        port = 8090 if s.connect_ex(("127.0.0.1", 8090)) != 0 else 0
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    click.secho(f"open http://127.0.0.1:{port}/ui/", bold=True)
    try:
        sh("ui", "--repo", str(repo_dir), "--listen", f"127.0.0.1:{port}", env=env, check=False)
    except KeyboardInterrupt:
        click.echo("dashboard stopped")


def write_demo_metric(audit_db: Path, path: Path) -> Path:
    """A product metric the demo makes up: basket reorders per minute, rising after web's one-click reorder."""
    from datetime import UTC, datetime, timedelta

    from deployctl.edges.audit.url import open_store

    store = open_store(f"sqlite:///{audit_db}", create=False)
    try:
        records = store.query()
    finally:
        store.close()
    reorder = [r.attempt.started_at for r in records if "reorder" in (r.attempt.app_commit_summary or "")
               or "reorder" in (r.attempt.file_commit_summary or "")]  # fmt: skip
    first = min((r.attempt.started_at for r in records), default=datetime.now(UTC))
    change = min(reorder, default=datetime.now(UTC))
    at, end = first - timedelta(minutes=5), datetime.now(UTC) + timedelta(minutes=2)
    rows = ["time,value,series"]
    n = 0
    while at <= end:
        wobble = (n * 7919) % 5
        rows.append(f"{at.isoformat()},{(12 if at < change else 31) + wobble},basket reorders/min")
        at += timedelta(seconds=15)
        n += 1
    path.write_text("\n".join(rows) + "\n")
    return path


def create_workloads(kubeconfig: str) -> None:
    from deployctl.devtools import manifests
    from deployctl.edges.kube.cluster import Cluster

    cluster = Cluster(kubeconfig=kubeconfig)
    for ns in ("shop-staging", "shop"):
        cluster.ensure_namespace(ns)
        for app in ("api", "web", "worker"):
            cluster.create_deployment(manifests.deployment(ns, app, image=f"shop/{app}:bootstrap", replicas=2))
            click.echo(f"deployment {ns}/{app} labelled deployctl.dev/app={app}")


if __name__ == "__main__":
    main()
