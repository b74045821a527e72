"""Rollout events and get-by-id: what the attempt page and ``history --id`` cost over 100,000 records.

    .venv/bin/python bench/attempt_events.py [--records 100000] [--postgres URL]

Prints figures; it is not a timed test.

- the attempt page before issue 24 found its record by scanning every record of the app
  (``query(app=...)`` then a filter); now it is ``get(id)`` plus ``events_of(id)``;
- writing rollout events: one ``add_events`` per wave of 50 attempts with 10 events each (a
  rollout of a few replicas), fsynced like every audit write.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.audit import NOW, attempt  # noqa: E402
from deployctl.edges.audit.url import open_store  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.audit import AttemptEvent, AuditStore, Finish  # noqa: E402


def fill(store: AuditStore, count: int) -> list[int]:
    """Setup only (not measured): ``count`` finished attempts over 180 days, in batches of 1,000."""
    rng = random.Random(2)
    ids: list[int] = []
    for start in range(0, count, 1000):
        batch = [attempt(rng, NOW - timedelta(days=180) + timedelta(seconds=i * 180 * 86400 / count))
                 for i in range(start, min(count, start + 1000))]
        new = store.start_many(batch)
        store.finish_many([Finish(i, result="succeeded") for i in new])
        ids += new
    return ids


def events(attempt_id: int, n: int) -> list[AttemptEvent]:
    kinds = ["applied", "revision", *["progress"] * (n - 3), "verdict"]
    return [AttemptEvent(attempt_id, seq, NOW, kind, f"deployment/web: {seq}/3 ready")
            for seq, kind in enumerate(kinds, start=1)]


def timed(fn: object, runs: int = 20) -> float:
    """Median wall time in ms of ``fn()`` over ``runs`` runs (after one warm-up)."""
    assert callable(fn)
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def run(store: AuditStore, label: str, records: int) -> None:
    t0 = time.perf_counter()
    ids = fill(store, records)
    print(f"{label}: setup {records:,} records in {time.perf_counter() - t0:.1f} s (not measured)")
    target = ids[len(ids) // 2]
    record = store.get(target)
    assert record is not None
    app = record.attempt.app
    store.add_events(events(target, 12))

    def scan() -> object:
        return next(r for r in store.query(app=app, limit=None) if r.id == target)

    def by_id() -> object:
        return store.get(target), store.events_of(target)

    print(f"{label}: attempt page lookup over {records:,} records: scan of the app's records (before) "
          f"{timed(scan, runs=5):.1f} ms, get(id) + events_of(id) {timed(by_id):.2f} ms (medians)")

    waves, per_wave, per_attempt = 20, 50, 10
    t0 = time.perf_counter()
    for w in range(waves):
        wave = ids[w * per_wave:(w + 1) * per_wave]
        store.add_events([e for i in wave for e in events(i, per_attempt)])
    took = time.perf_counter() - t0
    print(f"{label}: add_events: {waves} waves of {per_wave} attempts x {per_attempt} events in {took:.2f} s = "
          f"{took / waves * 1000:.1f} ms per wave, {waves * per_wave * per_attempt / took:,.0f} events/s")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--postgres", metavar="URL", help="also measure against this (empty) PostgreSQL database")
    args = parser.parse_args()
    configure_logging("error")
    logging.disable(logging.WARNING)
    out = Path(__file__).resolve().parent / "out"  # on the project's disk: /tmp may be a RAM disk
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="events-", dir=out) as tmp:
        store = open_store(f"sqlite://{tmp}/audit.db")
        try:
            run(store, "sqlite", args.records)
        finally:
            store.close()
    if args.postgres:
        pg = open_store(args.postgres)
        try:
            run(pg, "postgres", args.records)
        finally:
            pg.close()


if __name__ == "__main__":
    main_()
