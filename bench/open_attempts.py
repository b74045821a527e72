"""What looking for open attempts costs each run's start (``AuditStore.open_attempts``), against the size of the history.

    .venv/bin/python bench/open_attempts.py [--attempts 100000] [--audit URL]

Writes N ended attempts over 4 environments into a fresh store (SQLite in a temporary directory unless
``--audit`` names another, e.g. an empty PostgreSQL database), then times ``open_attempts`` (best of 5) with
none open (every run's usual case), with 3 open at the head of the history (runs in flight), and with one open
at its start (an attempt left open long ago: every attempt is read back to it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deployctl.edges.audit import url as audit_location  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.audit import AuditStore, Finish  # noqa: E402
from tests.fixtures.auditdata import make_attempt  # noqa: E402

ENVS = ["dev", "staging", "production", "eu"]


def best(store: AuditStore) -> tuple[int, float]:
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        found = store.open_attempts(envs=ENVS)
        seconds.append(time.perf_counter() - started)
    return len(found), min(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--audit", help="an empty store's URL (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    configure_logging("error")
    with tempfile.TemporaryDirectory(prefix="bench-open-") as tmp:
        store = audit_location.open_store(args.audit or f"sqlite:///{tmp}/audit.db")
        try:
            first: int | None = None
            for i in range(0, args.attempts, 2000):
                ids = store.start_many([make_attempt(env=ENVS[j % 4], app=f"app-{j % 2500}")
                                        for j in range(i, min(i + 2000, args.attempts))])
                first = ids[0] if first is None else first
                store.finish_many([Finish(x, "succeeded") for x in ids if x != first])
            print(f"{args.attempts} attempts in {store.url.split('?')[0]}")
            n, s = best(store)
            print(f"  one open at the start of the history: {n} found in {s * 1000:.1f} ms")
            store.close_interrupted()
            n, s = best(store)
            print(f"  none open:                            {n} found in {s * 1000:.1f} ms")
            store.start_many([make_attempt(env="staging", app="api")] * 3)
            n, s = best(store)
            print(f"  3 open at the head:                   {n} found in {s * 1000:.1f} ms")
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
