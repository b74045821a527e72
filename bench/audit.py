"""Audit store benchmark: durable appends, then `history --app X --since 7d` over 100,000 records.

    .venv/bin/python bench/audit.py [--appends 10000] [--batch 50] [--records 100000] [--postgres URL]

Prints figures; it is not a timed test. Targets (issue 5): >= 2,000 appends/s in SQLite and
<= 50 ms for the history query over 100,000 records. An "append" is one env/app attempt and its
outcome, measured two ways:

- one by one: ``start()`` (durable before the apply) then ``finish()`` (outcome + outbox row),
  each its own fsynced transaction (SQLite WAL, synchronous=FULL): 2 commits per record;
- batched, as a reconcile wave: ``start_many()`` of ``--batch`` attempts, then ``finish_many()``
  of their outcomes: 2 commits per batch, every record still durable before its apply / after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from click.testing import CliRunner  # noqa: E402

from deployctl.cli import main  # noqa: E402
from deployctl.edges.audit import sql as auditsql  # noqa: E402
from deployctl.edges.audit.sqlite import SqliteStore  # noqa: E402
from deployctl.edges.audit.url import open_store  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from deployctl.model.audit import Actor, Attempt, AuditStore, Finish  # noqa: E402

APPS = [f"app{i:02d}" for i in range(20)]
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


def bench_appends(store: AuditStore, count: int) -> float:
    """Records/s appending one by one: ``start`` then ``finish``, 2 commits per record."""
    rng = random.Random(1)
    attempts = [attempt(rng, NOW - timedelta(seconds=count - i)) for i in range(count)]
    t0 = time.perf_counter()
    for a in attempts:
        store.finish(store.start(a), result="succeeded")
    return count / (time.perf_counter() - t0)


def bench_batched_appends(store: AuditStore, count: int, batch: int) -> float:
    """Records/s appending in waves: ``start_many(batch)`` then ``finish_many(batch)``, 2 commits per wave."""
    rng = random.Random(1)
    attempts = [attempt(rng, NOW - timedelta(seconds=count - i)) for i in range(count)]
    t0 = time.perf_counter()
    for first in range(0, count, batch):
        ids = store.start_many(attempts[first : first + batch])
        store.finish_many([Finish(i, "succeeded") for i in ids])
    return count / (time.perf_counter() - t0)


def fill_sqlite(path: Path, count: int) -> None:
    """Setup only (not measured): ``count`` finished attempts over 180 days in one transaction."""
    rng = random.Random(2)
    store = open_store(f"sqlite://{path}")
    assert isinstance(store, SqliteStore)
    rows, outcomes = [], []
    for i in range(count):
        started = NOW - timedelta(days=180) + timedelta(seconds=i * 180 * 86400 / count)
        a = attempt(rng, started)
        rows.append(
            (
                a.env, a.app, a.namespace, json.dumps(list(a.workloads)), a.previous_sha, a.new_sha, a.image,
                a.digest, a.deploy_commit, a.deploy_file, a.file_commit, a.file_author, a.file_committer,
                store._enc_time(a.file_commit_time), a.file_commit_summary, json.dumps(list(a.reviewers)),
                a.app_commit_summary, a.trigger, a.actor.user, a.actor.host, a.actor.ci_job,
                store._enc_time(a.started_at),
            )
        )  # fmt: skip
        finished = store._enc_time(started + timedelta(seconds=30))
        outcomes.append((i + 1, "succeeded", None, None, finished, finished))
    with store._write() as cur:
        cur.executemany(auditsql._INSERT_ATTEMPT.removesuffix(" RETURNING id"), rows)
        cur.executemany("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", outcomes)
    store._conn.execute("ANALYZE")
    store.close()


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
        "--postgres", metavar="URL", help="also measure appends against this PostgreSQL database"
    )
    args = parser.parse_args()
    configure_logging("error")
    logging.disable(logging.WARNING)

    out = Path(__file__).resolve().parent / "out"  # on the project's disk: /tmp may be a RAM disk
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="audit-", dir=out) as tmp:
        waves = -(-args.appends // args.batch)
        store = open_store(f"sqlite://{tmp}/appends.db")
        rate = bench_appends(store, args.appends)
        store.close()
        print(
            f"sqlite appends, one by one: {args.appends:,} start+finish in {args.appends / rate:.2f} s = "
            f"{rate:,.0f} records/s (2 fsynced commits per record, WAL + synchronous=FULL)"
        )
        store = open_store(f"sqlite://{tmp}/batched.db")
        batched = bench_batched_appends(store, args.appends, args.batch)
        store.close()
        print(
            f"sqlite appends, batched: {args.appends:,} as {waves:,} waves of start_many({args.batch}) + "
            f"finish_many({args.batch}) in {args.appends / batched:.2f} s = {batched:,.0f} records/s "
            f"(2 fsynced commits per wave; target >= 2,000/s)"
        )

        if args.postgres:
            pg = open_store(args.postgres)
            pg_rate = bench_appends(pg, args.appends)
            pg_batched = bench_batched_appends(pg, args.appends, args.batch)
            pg.close()
            print(f"postgres appends, one by one: {args.appends:,} start+finish = {pg_rate:,.0f} records/s")
            print(
                f"postgres appends, batched ({args.batch} per wave): {args.appends:,} = "
                f"{pg_batched:,.0f} records/s"
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


if __name__ == "__main__":
    main_()
