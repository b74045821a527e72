"""The demo's verification story: a real Prometheus (Debian's ``prometheus``) scraping a metrics page that
the demo serves, ``verify:`` checks added to the demo's deployctl.yaml, and production set to take only
verified SHAs. :func:`run` tells it: every app verified in staging, web's verified SHA promoted and deployed
to production, then a web SHA whose error ratio jumps fails verification in staging and is held back from
production (``diff`` and ``reconcile`` refuse it, saying why).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click

QUERY = 'deploy_error_ratio{app="{app}",env="{env}"}'
CHECK = (
    "    verify:                                # after each rollout: the error ratio stays under 1%\n"
    "      - name: error-rate\n"
    f"        query: '{QUERY}'\n"
    "        success: result < 0.01\n"
    "        interval: 1s                       # a real window is minutes; the demo's is 2 seconds\n"
    "        count: 3\n"
)
Sh = Callable[..., int]


class MetricsPage:
    """``deploy_error_ratio`` per app and environment, as the shop's own metrics would report it."""

    def __init__(self, values: dict[tuple[str, str], float]) -> None:
        self.values = dict(values)
        self.lock = threading.Lock()
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with page.lock:
                    lines = ["# TYPE deploy_error_ratio gauge"] + [
                        f'deploy_error_ratio{{app="{a}",env="{e}"}} {v}' for (a, e), v in sorted(page.values.items())]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.target = f"127.0.0.1:{self.server.server_address[1]}"

    def set(self, app: str, env: str, value: float) -> None:
        with self.lock:
            self.values[(app, env)] = value

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_prometheus(workdir: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus scraping ``target`` every second, on a free loopback port; returns the process and its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("demo: prometheus is missing; run 'make system-deps' (Debian package prometheus)")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: shop\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_for_value(url: str, app: str, env: str, value: float, *, timeout: float = 60.0) -> None:
    """Until Prometheus has scraped ``value`` for app/env."""
    query = urllib.parse.quote(QUERY.replace("{app}", app).replace("{env}", env))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query={query}", timeout=2) as r:  # noqa: S310
                result = json.loads(r.read())["data"]["result"]
            if result and float(result[0]["value"][1]) == value:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: Prometheus at {url} never showed {value} for {app} in {env} within {timeout:.0f}s")


def with_verification(config: str, apps: tuple[str, ...]) -> str:
    """The demo's deployctl.yaml with a ``verify:`` check on every app and production gated on it."""
    for app in apps:
        config = config.replace(f"\n  {app}:\n", f"\n  {app}:\n{CHECK}", 1)
    config = config.replace("\n  production:\n", "\n  production:\n    require_verified: true"
                            "               # a SHA must have been verified in staging\n", 1)
    return config.replace("\n  staging:\n", "\n  staging:\n    on_verification_failure: notify\n", 1)


def expect(code: int, wanted: int, what: str) -> None:
    if code != wanted:
        raise SystemExit(f"demo: {what} exited {code}, not {wanted}")


def run(*, repo_dir: Path, apps: tuple[str, ...], commit: Callable[[dict[str, bytes], str, str], str],
        push: Callable[[str, str], str], sh: Sh, env: dict[str, str], workdir: Path) -> None:
    """The story (see the module docstring); ``commit(files, message, author)`` commits to the demo repo."""
    import hashlib

    page = MetricsPage({(a, e): 0.002 for a in apps for e in ("staging", "production")})
    prometheus, url = start_prometheus(workdir, page.target)
    try:
        wait_for_value(url, "web", "staging", 0.002)
        click.echo(f"Prometheus at {url} scrapes the shop's deploy_error_ratio; deployctl reads it from "
                   "DEPLOYCTL_PROMETHEUS_URL (a setting of the runner, never repo content)")
        verifying = {**env, "DEPLOYCTL_PROMETHEUS_URL": url}
        config = (repo_dir / "deployctl.yaml").read_text()
        commit({"deployctl.yaml": with_verification(config, apps).encode()},
               "Verify every deploy against its error ratio; production takes only verified SHAs\n", "Rae Reviewer")
        for app in apps:
            expect(sh("verify", "--repo", str(repo_dir), "--env", "staging", "--app", app, env=verifying,
                      check=False), 0, f"verify of {app} in staging")
        click.secho("web's one-click reorder was verified in staging: production takes it", bold=True)
        sh("promote", "web", "--from", "staging", "--to", "production", "--repo", str(repo_dir), "--commit",
           "-m", "Release 43", env=env)
        sh("validate", "--repo", str(repo_dir), "--audit", env["DEPLOYCTL_AUDIT"], env=env)
        sh("reconcile", "--repo", str(repo_dir), "--env", "production", "--verify", "--timeout", "120", env=verifying)

        bad = hashlib.sha1(b"web: new checkout flow", usedforsecurity=False).hexdigest()
        push("shop/web", bad)
        page.set("web", "staging", 0.2)  # the new checkout flow fails one request in five
        wait_for_value(url, "web", "staging", 0.2)
        click.secho("\nweb's new checkout flow goes to staging, and its error ratio jumps to 20%", bold=True)
        deploy_file = repo_dir / "environments/staging/web.deploy"
        commit({"environments/staging/web.deploy": f"{bad}\n* Checkout: new flow\n".encode()
                + deploy_file.read_bytes()},
               "staging: deploy web new checkout flow\n\nReviewed-by: Rae Reviewer <rae@example.com>\n", "Sam Engineer")
        expect(sh("reconcile", "--repo", str(repo_dir), "--env", "staging", "--verify", "--timeout", "120",
                  env=verifying, check=False), 1, "reconcile --verify of the failing deploy")
        click.secho("\nA promotion of it is refused by the PR check and by reconcile: held back from production",
                    bold=True)
        sh("promote", "web", "--from", "staging", "--to", "production", "--repo", str(repo_dir), "--commit",
           "-m", "Release 44", env=env)
        expect(sh("diff", "--repo", str(repo_dir), "--base", "HEAD~1", "--head", "HEAD", "--audit",
                  env["DEPLOYCTL_AUDIT"], env=env, check=False), 1, "diff of the promotion")
        expect(sh("reconcile", "--repo", str(repo_dir), "--env", "production", "--timeout", "120", env=verifying,
                  check=False), 2, "reconcile of the refused promotion")
        sh("status", "--repo", str(repo_dir), "--audit", env["DEPLOYCTL_AUDIT"], env=env)
        sh("history", "--app", "web", env=env, check=False)
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(10)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()
        page.close()
