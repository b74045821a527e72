"""How long `make test` takes on a fresh clone of the committed HEAD, as CI runs it.

    .venv/bin/python bench/maketest.py [--cold] [--keep]

Clones HEAD into a temporary folder and runs `CI=true make test` there, printing the wall time of
each phase (venv, system packages, control plane, Kafka jars, lint, typecheck, pytest) and
pytest's closing line. With ``--cold`` the Go module and build caches, the project cache
(control plane, Kafka jars) and pip's cache are fresh empty folders, as on a new machine (the
Debian packages cannot be uninstalled here: they count only when they are missing). Not a test:
the figures vary with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `make test`'s prerequisites in the Makefile's order; each is run as its own `make` so it is timed alone,
# then `make test` itself, which finds them done and runs pytest.
PHASES = (
    ("venv + pip", "deps"),
    ("system packages", "system-deps"),
    ("control plane", "controlplane"),
    ("gitea", "gitea"),
    ("kafka jars", "kafka"),
    ("lint", "lint"),
    ("typecheck", "typecheck"),
    ("pytest", "test"),
)
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed).*)$")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="empty Go, pip and project caches")
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deployctl-maketest-"))
    clone = work / "deployctl"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYCTL_") and k != "VIRTUAL_ENV"}
    env["CI"] = "true"
    if opts.cold:
        for var, sub in (("GOMODCACHE", "gomod"), ("GOCACHE", "gobuild"), ("DEPLOYCTL_CACHE", "cache"),
                         ("PIP_CACHE_DIR", "pip")):
            env[var] = str(work / sub)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                          text=True, check=True).stdout.strip()
    print(f"make test on a fresh clone of {head}, caches {'cold' if opts.cold else 'warm'}")
    summary, rc, tail = "", 0, []
    t0 = time.monotonic()
    for name, target in PHASES:
        started = time.monotonic()
        with subprocess.Popen(["make", target], cwd=clone, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail = [*tail[-40:], line]
                if m := SUMMARY.match(line.strip()):
                    summary = m.group(1)
            rc = proc.wait()
        print(f"  {name:16} {time.monotonic() - started:7.1f} s", flush=True)
        if rc != 0:
            sys.stdout.write(f"  make {target} exited {rc}; its last lines:\n" + "".join(tail))
            break
    total = time.monotonic() - t0
    print(f"  {'total':16} {total:7.1f} s ({total / 60:.1f} min), exit {rc}")
    print(f"  pytest: {summary or 'no summary line'}")
    if opts.keep:
        print(f"  clone kept at {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
