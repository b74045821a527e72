"""Four processes appending to one store at once lose nothing and duplicate nothing."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from deployctl.edges.audit.db import SCHEMA_VERSION
from deployctl.edges.audit.url import open_store
from deployctl.model.audit import Finish
from tests.fixtures.auditdata import T0, make_attempt

pytestmark = pytest.mark.integration

PROCESSES = 4
APPENDS = 2_500
WAVE = 50
"""Attempts per batch in the batched runs, like one reconcile wave."""


def append_records(url: str, worker: int, count: int, batch: int = 1) -> list[int]:
    """One process: start and finish ``count`` attempts, ``batch`` per transaction (1: one by one)."""
    store = open_store(url)
    base = make_attempt(app=f"app{worker}")
    ids: list[int] = []
    try:
        for first in range(0, count, batch):
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
def test_four_processes_append_ten_thousand_records_and_none_is_lost(
    backend: str, batch: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite://{tmp_path}/audit.db" if backend == "sqlite" else request.getfixturevalue("postgres_db")
    open_store(url).close()  # migrate once up front; concurrent first opens are covered below
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.starmap(append_records, [(url, w, APPENDS, batch) for w in range(PROCESSES)])

    given = [i for ids in results for i in ids]
    assert len(given) == len(set(given)) == PROCESSES * APPENDS
    store = open_store(url)
    try:
        records = store.query()
        assert sorted(r.id for r in records) == sorted(given)
        assert Counter(r.attempt.app for r in records) == {f"app{w}": APPENDS for w in range(PROCESSES)}
        assert {r.result for r in records} == {"succeeded"}
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
        for i in range(100):
            attempt_id = store.start(make_attempt(app=f"app{n}", started_at=T0 + timedelta(seconds=i)))
            store.finish(attempt_id, result="succeeded")
            store.query(app=f"app{n}", limit=1)
            ids.append(attempt_id)
        return ids

    try:
        with ThreadPoolExecutor(8) as pool:
            given = [i for ids in pool.map(worker, range(8)) for i in ids]
        records = store.query()
        assert sorted(r.id for r in records) == sorted(given) and len(set(given)) == 800
        assert {r.result for r in records} == {"succeeded"}
    finally:
        store.close()
