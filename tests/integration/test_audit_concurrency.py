"""Four processes appending to one store at once lose nothing, duplicate nothing and keep one gap-free chain.

The writers run in lockstep: a barrier starts them together and meets again every few transactions, so each
of the few hundred appends races the other processes for the chain's head. That is what fails when the chain
lock is missing (two rows chained to one head, one id handed out twice); volume and speed are bench/audit.py's.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from deployctl.edges.audit.schema import SCHEMA_VERSION
from deployctl.edges.audit.url import open_store
from deployctl.model.audit import Finish
from tests.fixtures.auditdata import T0, make_attempt

pytestmark = pytest.mark.integration

PROCESSES = 4
APPENDS = 100
"""Attempts per process: each is two chained rows (the attempt, then its outcome)."""
WAVE = 10
"""Attempts per batch in the batched runs, like one reconcile wave."""
LOCKSTEP = 2
"""Appends (or waves) each process makes between two meetings at the barrier."""
THREAD_APPENDS = 25
"""Attempts per thread in the one-store-many-threads test."""
BARRIER_CEILING = 120.0
"""Seconds a process waits at the barrier for the others before the test fails (generous: a loaded machine)."""

_barrier: threading.Barrier | None = None
"""The barrier this worker process shares with the others (set by the pool's initializer)."""


def share_barrier(barrier: threading.Barrier) -> None:
    global _barrier
    _barrier = barrier


def meet() -> None:
    assert _barrier is not None
    _barrier.wait(BARRIER_CEILING)


def append_records(url: str, worker: int, count: int, batch: int = 1) -> list[int]:
    """One process: start and finish ``count`` attempts, ``batch`` per transaction (1: one by one), meeting
    the other processes at the barrier before the first and every LOCKSTEP transactions after."""
    try:
        return _append_in_lockstep(url, worker, count, batch)
    except BaseException:
        assert _barrier is not None
        _barrier.abort()  # the others fail at once rather than wait out the ceiling for this one
        raise


def _append_in_lockstep(url: str, worker: int, count: int, batch: int) -> list[int]:
    store = open_store(url)
    base = make_attempt(app=f"app{worker}")
    ids: list[int] = []
    try:
        for n, first in enumerate(range(0, count, batch)):
            if n % LOCKSTEP == 0:
                meet()
            seconds = range(first, min(first + batch, count))
            if batch == 1:
                attempt_id = store.start(replace(base, started_at=T0 + timedelta(seconds=first)))
                store.finish(attempt_id, result="succeeded", finished_at=T0 + timedelta(seconds=first + 1))
                ids.append(attempt_id)
                continue
            wave = store.start_many([replace(base, started_at=T0 + timedelta(seconds=i)) for i in seconds])
            store.finish_many(
                [
                    Finish(attempt_id, "succeeded", finished_at=T0 + timedelta(seconds=i + 1))
                    for attempt_id, i in zip(wave, seconds, strict=True)
                ]
            )
            ids += wave
    finally:
        store.close()
    return ids


@pytest.mark.parametrize("batch", [1, WAVE], ids=["one-by-one", "batched"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_four_processes_appending_in_lockstep_lose_nothing_and_keep_one_gap_free_chain(
    backend: str, batch: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite://{tmp_path}/audit.db" if backend == "sqlite" else request.getfixturevalue("postgres_db")
    open_store(url).close()  # migrate once up front; concurrent first opens are covered below
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    with ctx.Pool(PROCESSES, initializer=share_barrier, initargs=(barrier,)) as pool:
        # chunksize 1: each process takes one worker's appends (a process waiting at the barrier takes no other)
        results = pool.starmap(
            append_records, [(url, w, APPENDS, batch) for w in range(PROCESSES)], chunksize=1
        )

    given = [i for ids in results for i in ids]
    assert len(given) == len(set(given)) == PROCESSES * APPENDS
    store = open_store(url)
    try:
        records = store.query()
        assert sorted(r.id for r in records) == sorted(given)
        assert Counter(r.attempt.app for r in records) == {f"app{w}": APPENDS for w in range(PROCESSES)}
        assert {r.result for r in records} == {"succeeded"}
        chain = store.verify_chain()
        assert chain.broken is None
        rows = 2 * PROCESSES * APPENDS  # an attempt and its outcome each
        assert (chain.rows, chain.first_seq, chain.last_seq) == (rows, 1, rows)  # one chain, no gap, no fork
        assert len(store.pending_events("none", now=T0)) == 0  # unknown sink sees nothing
        store.register_sink("late")
        assert store.pending_events("late", now=T0) == []  # a new sink does not replay history
    finally:
        store.close()


def open_and_append(url: str) -> int:
    store = open_store(url)
    try:
        return store.start(make_attempt())
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_processes_opening_a_new_store_at_once_migrate_it_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite://{tmp_path}/audit.db" if backend == "sqlite" else request.getfixturevalue("postgres_db")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        ids = pool.map(open_and_append, [url] * PROCESSES)
    assert len(set(ids)) == PROCESSES
    store = open_store(url)
    try:
        assert store.schema_version() == SCHEMA_VERSION  # type: ignore[attr-defined]
        assert len(store.query()) == PROCESSES
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_threads_sharing_one_store_never_interleave_transactions(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite://{tmp_path}/audit.db" if backend == "sqlite" else request.getfixturevalue("postgres_db")
    store = open_store(url)

    def worker(n: int) -> list[int]:
        ids = []
        for i in range(THREAD_APPENDS):
            attempt_id = store.start(make_attempt(app=f"app{n}", started_at=T0 + timedelta(seconds=i)))
            store.finish(attempt_id, result="succeeded")
            store.query(app=f"app{n}", limit=1)
            ids.append(attempt_id)
        return ids

    try:
        with ThreadPoolExecutor(8) as pool:
            given = [i for ids in pool.map(worker, range(8)) for i in ids]
        records = store.query()
        assert sorted(r.id for r in records) == sorted(given) and len(set(given)) == 8 * THREAD_APPENDS
        assert {r.result for r in records} == {"succeeded"}
    finally:
        store.close()
