"""What verification costs the controller: 1,000 apps deployed at once, each verified by one check of
5 measurements, against a real Prometheus (Debian's ``prometheus``) scraping a page with their 1,000 series.

    .venv/bin/python bench/verify_cost.py [--apps 1000] [--count 5] [--workers 8]

Prints figures; it is not a timed test. The window is squeezed to 1 s per interval so that the bench
measures the work (queries, parsing, audit writes), not the waiting; a real window only spreads the same
work over more time. Queries per minute for N apps follow from the config: each deploy costs
``count`` queries per check over its window, and nothing between deploys.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.audit import attempt  # noqa: E402
from deployctl.app.verify import Subject, VerifyRun, verify  # noqa: E402
from deployctl.edges.audit.url import open_store  # noqa: E402
from deployctl.edges.metrics.prometheus import Prometheus  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.verification import QUERY, Check, parse_condition  # noqa: E402


def page(apps: int) -> bytes:
    lines = ["# TYPE deploy_error_ratio gauge"]
    lines += [f'deploy_error_ratio{{app="app{i}",env="staging"}} 0.001' for i in range(apps)]
    return ("\n".join(lines) + "\n").encode()


def serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_prometheus(root: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        sys.exit("prometheus not found; apt-get install prometheus")
    (root / "prometheus.yml").write_text(
        "scrape_configs:\n  - job_name: bench\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    with socket_port() as port:
        pass
    proc = subprocess.Popen([binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/query?query=count(deploy_error_ratio)", timeout=2) as r:  # noqa: S310
                if b'"value"' in r.read():
                    return proc, url
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    sys.exit("prometheus did not come up with the series within 60 s")


class socket_port:  # noqa: N801 - a tiny context manager
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    configure_logging("error")
    logging.disable(logging.CRITICAL)
    root = Path(tempfile.mkdtemp(prefix="deployctl-verify-bench-"))
    server = serve(page(args.apps))
    proc, url = start_prometheus(root, f"127.0.0.1:{server.server_address[1]}")
    try:
        store = open_store(f"sqlite:///{root / 'audit.db'}")
        import random

        rng = random.Random(1)
        ids = store.start_many([attempt(rng, datetime.now(UTC)) for _ in range(args.apps)])
        for attempt_id in ids:
            store.finish(attempt_id, result="succeeded")
        check = Check(name="errors", kind=QUERY, query='deploy_error_ratio{app="{app}",env="{env}"}',
                      condition=parse_condition("result < 0.01"), interval_seconds=1.0, count=args.count)
        run = VerifyRun(Prometheus(url), store, trigger="watch")
        subjects = [Subject(attempt_id, "staging", f"app{i}", "ns", hashlib.sha1(str(i).encode()).hexdigest())
                    for i, attempt_id in enumerate(ids)]
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            results = list(pool.map(lambda s: verify(s, (check,), run), subjects))
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        queries = args.apps * args.count
        verified = sum(1 for v in results if v.ok)
        print(f"{args.apps} apps x 1 check x {args.count} measurements = {queries} queries, {args.workers} workers")
        print(f"verified: {verified}/{args.apps}; wall {wall:.1f} s (windows of {args.count - 1} s each, "
              f"{args.workers} at a time)")
        print(f"controller CPU: {cpu:.2f} s in all = {cpu / queries * 1000:.2f} ms per query "
              f"(query, parse, judge) plus {args.apps} audit writes")
        print(f"controller max RSS: {after.ru_maxrss / 1024:.0f} MiB")
        print(f"queries per minute if all {args.apps} apps deploy within one 5-minute window: "
              f"{queries / 5:.0f}; between deploys: 0")
        store.close()
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
