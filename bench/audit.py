"""Audit store benchmark: durable appends with and without the audit chain, then `history --app X
--since 7d` and `audit verify` over 100,000 records.

    .venv/bin/python bench/audit.py [--appends 10000] [--batch 50] [--records 100000] [--rounds 3]
                                    [--verify-records 500000] [--postgres URL]

Prints figures; it is not a timed test. Targets (issue 5): >= 2,000 appends/s in SQLite and
<= 50 ms for the history query over 100,000 records. An "append" is one env/app attempt and its
outcome, measured two ways:

- one by one: ``start()`` (durable before the apply) then ``finish()`` (outcome + outbox row),
  each its own fsynced transaction (SQLite WAL, synchronous=FULL): 2 commits per record;
- batched, as a reconcile wave: ``start_many()`` of ``--batch`` attempts, then ``finish_many()``
  of their outcomes: 2 commits per batch, every record still durable before its apply / after it.

Each is measured with the chain (every row hashed and MACed under a key, the head read under the
chain lock) and without it (a store whose rows carry no chain columns, as before the chain), in
back-to-back pairs (``--rounds``): the cost is the median over the pairs, the rates are the best
runs (the issue's goal: the chain costs at most 20%).
``audit verify`` is timed over the history store (2 chain rows per record) and, with
``--verify-records``, over a bigger one, as a new process whose peak memory is reported.
"""

from __future__ import annotations

import argparse
import logging
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from click.testing import CliRunner  # noqa: E402

from deployctl.cli import main  # noqa: E402
from deployctl.edges.audit import sql as auditsql  # noqa: E402
from deployctl.edges.audit.chain import AuditKeys  # noqa: E402
from deployctl.edges.audit.chained import ChainAppender  # noqa: E402
from deployctl.edges.audit.sqlite import SqliteStore  # noqa: E402
from deployctl.edges.audit.url import open_store  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.audit import Actor, Attempt, AuditStore, Finish  # noqa: E402

APPS = [f"app{i:02d}" for i in range(20)]
KEYS = AuditKeys.parse("bench-key-" + "0" * 32)
ENVS = ["staging", "production"]
NOW = datetime.now(UTC)


def attempt(rng: random.Random, started: datetime) -> Attempt:
    app = rng.choice(APPS)
    new = f"{rng.getrandbits(160):040x}"
    return Attempt(
        env=rng.choice(ENVS),
        app=app,
        namespace="bench",
        workloads=(f"deployment/{app}",),
        previous_sha=f"{rng.getrandbits(160):040x}",
        new_sha=new,
        image=f"registry.local/{app}:{new}",
        digest=None,
        deploy_commit=f"{rng.getrandbits(160):040x}",
        deploy_file=f"environments/production/{app}.deploy",
        file_commit=f"{rng.getrandbits(160):040x}",
        file_author="Ann Author <ann@example.com>",
        file_committer="Ann Author <ann@example.com>",
        file_commit_time=started,
        file_commit_summary=f"Deploy {app} {new[:7]}",
        reviewers=("bob@example.com",),
        app_commit_summary="Fix checkout rounding",
        trigger="ci",
        actor=Actor("ci-bot", "runner-1", "https://ci.example/jobs/1"),
        started_at=started,
    )


class Rate(NamedTuple):
    per_second: float
    """Records per second of wall time (fsync waits included)."""
    cpu_us: float
    """CPU time of this process per record, in µs (SQLite runs in-process): far less moved by other load."""


def bench_appends(store: AuditStore, count: int) -> Rate:
    """Appending one by one: ``start`` then ``finish``, 2 commits per record."""
    rng = random.Random(1)
    attempts = [attempt(rng, NOW - timedelta(seconds=count - i)) for i in range(count)]
    t0, c0 = time.perf_counter(), time.process_time()
    for a in attempts:
        store.finish(store.start(a), result="succeeded")
    return Rate(count / (time.perf_counter() - t0), (time.process_time() - c0) / count * 1e6)


def bench_batched_appends(store: AuditStore, count: int, batch: int) -> Rate:
    """Appending in waves: ``start_many(batch)`` then ``finish_many(batch)``, 2 commits per wave."""
    rng = random.Random(1)
    attempts = [attempt(rng, NOW - timedelta(seconds=count - i)) for i in range(count)]
    t0, c0 = time.perf_counter(), time.process_time()
    for first in range(0, count, batch):
        ids = store.start_many(attempts[first : first + batch])
        store.finish_many([Finish(i, "succeeded") for i in ids])
    return Rate(count / (time.perf_counter() - t0), (time.process_time() - c0) / count * 1e6)


class _NoChain(ChainAppender):
    """Rows without chain columns, and no head read: the write path before the chain."""

    def __init__(self) -> None:
        super().__init__(0, "", None)

    def next(self, kind: object, values: object) -> tuple[None, None, None, None]:  # type: ignore[override]
        return (None, None, None, None)


class UnchainedSqliteStore(SqliteStore):
    """The baseline of the comparison: the same store, writing no chain."""

    def _chain_appender(self, cur: object) -> ChainAppender:
        return _NoChain()


def fill_sqlite(path: Path, count: int, *, batch: int = 5_000) -> None:
    """Setup only (not measured): ``count`` finished, chained attempts over 180 days, in waves of ``batch``."""
    rng = random.Random(2)
    store = open_store(f"sqlite://{path}", keys=KEYS)
    assert isinstance(store, SqliteStore)
    for first in range(0, count, batch):
        wave = range(first, min(first + batch, count))
        starts = [NOW - timedelta(days=180) + timedelta(seconds=i * 180 * 86400 / count) for i in wave]
        ids = store.start_many([attempt(rng, started) for started in starts])
        store.finish_many(
            [
                Finish(i, "succeeded", finished_at=s + timedelta(seconds=30))
                for i, s in zip(ids, starts, strict=True)
            ]
        )
    store._conn.execute("ANALYZE")
    store.close()


def bench_verify(url: str, rows: int) -> tuple[float, int]:
    """Seconds per 100,000 chain rows of `deployctl audit verify`, and its peak RSS in MiB, as a new process."""
    exe = Path(sys.executable).with_name("deployctl")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(exe), "audit", "verify", "--audit", url], capture_output=True, text=True,
        env={"DEPLOYCTL_AUDIT_KEY": ",".join(k.decode() for k in KEYS.keys), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    took = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"chain holds: {rows:,} row(s)" in done.stdout, done.stdout
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took / rows * 100_000, max(peak, before) // 1024


def timed(fn: object, runs: int = 30) -> tuple[float, float]:
    """Median and best wall time in ms of ``fn()`` over ``runs`` runs (after one warm-up)."""
    assert callable(fn)
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), min(samples)


def main_() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appends", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50, help="attempts per wave in the batched run")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument(
        "--rounds", type=int, default=6, help="back-to-back chained/unchained pairs per way of appending"
    )
    parser.add_argument(
        "--verify-records",
        type=int,
        default=0,
        metavar="N",
        help="also verify a store of N records (2N chain rows), e.g. 500000 for 1,000,000 rows",
    )
    parser.add_argument(
        "--postgres", metavar="URL", help="also measure appends against this PostgreSQL database"
    )
    args = parser.parse_args()
    configure_logging("error")
    logging.disable(logging.WARNING)

    out = Path(__file__).resolve().parent / "out"  # on the project's disk: /tmp may be a RAM disk
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="audit-", dir=out) as tmp:
        waves = -(-args.appends // args.batch)
        best: dict[tuple[str, bool], float] = {}
        costs: dict[str, list[float]] = {"one": [], "batched": []}
        cpu: dict[tuple[str, bool], list[float]] = {}
        for n in range(args.rounds):
            for way in ("one", "batched"):
                pair: dict[bool, Rate] = {}
                for chain in (True, False) if n % 2 == 0 else (False, True):  # neither always goes first
                    path = Path(tmp) / f"{way}-{chain}-{n}.db"
                    store: AuditStore = (
                        open_store(f"sqlite://{path}", keys=KEYS) if chain else UnchainedSqliteStore(path)
                    )
                    pair[chain] = (bench_appends(store, args.appends) if way == "one"
                                   else bench_batched_appends(store, args.appends, args.batch))  # fmt: skip
                    store.close()
                    best[way, chain] = max(best.get((way, chain), 0.0), pair[chain].per_second)
                    cpu.setdefault((way, chain), []).append(pair[chain].cpu_us)
                # two runs back to back see about the same load
                costs[way].append(1 - pair[True].per_second / pair[False].per_second)
        for way, what in (
            ("one", "one by one (2 fsynced commits per record)"),
            (
                "batched",
                f"batched: {waves:,} waves of start_many({args.batch}) + "
                f"finish_many({args.batch}) (2 fsynced commits per wave; target >= 2,000/s)",
            ),
        ):
            chained_rate, plain = best[way, True], best[way, False]
            cpu_chain, cpu_plain = min(cpu[way, True]), min(cpu[way, False])
            print(
                f"sqlite appends, {what}: {args.appends:,} records, best of {args.rounds}: "
                f"{chained_rate:,.0f} records/s with the chain, {plain:,.0f} without; the chain costs "
                f"{100 * statistics.median(costs[way]):.0f}% of write throughput (median of {args.rounds} "
                f"back-to-back pairs, range {100 * min(costs[way]):.0f}% to {100 * max(costs[way]):.0f}%; goal <= 20%); "
                f"CPU per record (least of {args.rounds}): {cpu_chain:.0f} µs with the chain, {cpu_plain:.0f} µs "
                f"without (+{100 * (cpu_chain / cpu_plain - 1):.0f}%)"
            )  # fmt: skip

        if args.postgres:
            pg = open_store(args.postgres, keys=KEYS)
            pg_rate = bench_appends(pg, args.appends)
            pg_batched = bench_batched_appends(pg, args.appends, args.batch)
            pg.close()
            print(
                f"postgres appends, one by one, chained: {args.appends:,} start+finish = {pg_rate.per_second:,.0f} records/s"
            )
            print(
                f"postgres appends, batched ({args.batch} per wave), chained: {args.appends:,} = "
                f"{pg_batched.per_second:,.0f} records/s"
            )

        db = Path(tmp) / "history.db"
        t0 = time.perf_counter()
        fill_sqlite(db, args.records)
        took = time.perf_counter() - t0
        print(f"setup: {args.records:,} records over 180 days in {took:.1f} s (not measured)")

        url = f"sqlite://{db}"
        store = open_store(url)
        since = NOW - timedelta(days=7)
        found = len(store.query(app="app07", since=since))
        median, best = timed(lambda: store.query(app="app07", since=since))
        store.close()
        print(
            f"query: store.query(app='app07', since=7d ago) over {args.records:,} records -> {found} "
            f"records: median {median:.2f} ms, best {best:.2f} ms (target <= 50 ms)"
        )

        runner = CliRunner()
        cli = ["history", "--audit", url, "--app", "app07", "--since", "7d"]
        result = runner.invoke(main, cli)
        assert result.exit_code == 0, result.output
        median, best = timed(lambda: runner.invoke(main, cli), runs=15)
        shown = len(result.output.splitlines()) - 1
        print(
            f"command: deployctl {' '.join(cli[:1] + cli[3:])} (open, query, render {shown} rows, "
            f"in-process): median {median:.2f} ms, best {best:.2f} ms"
        )
        exe = Path(sys.executable).with_name("deployctl")
        if exe.exists():
            median, best = timed(
                lambda: subprocess.run([str(exe), *cli], capture_output=True, check=True), runs=5
            )
            print(f"command as a new process (Python start-up and imports included): median {median:.0f} ms")
        store = open_store(url)
        assert isinstance(store, SqliteStore)
        plan = store._conn.execute(
            "EXPLAIN QUERY PLAN " + auditsql._SELECT_RECORDS + " WHERE a.app = ? AND a.started_at >= ?",
            ("app07", "2024"),
        ).fetchall()
        store.close()
        print("query plan: " + "; ".join(str(row[-1]) for row in plan))

        per, peak = bench_verify(url, 2 * args.records)
        print(f"verify: deployctl audit verify over {2 * args.records:,} chain rows ({args.records:,} records, "
              f"keyed), as a new process: {per:.2f} s per 100,000 rows, peak RSS {peak} MiB")  # fmt: skip
        if args.verify_records:
            big = Path(tmp) / "verify.db"
            t0 = time.perf_counter()
            fill_sqlite(big, args.verify_records)
            print(
                f"setup: {args.verify_records:,} records in {time.perf_counter() - t0:.1f} s (not measured)"
            )
            per, peak = bench_verify(f"sqlite://{big}", 2 * args.verify_records)
            print(f"verify: over {2 * args.verify_records:,} chain rows: {per:.2f} s per 100,000 rows, "
                  f"peak RSS {peak} MiB")  # fmt: skip


if __name__ == "__main__":
    main_()
