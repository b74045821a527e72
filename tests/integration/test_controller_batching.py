"""The controller writes the audit history in batches, as the CLI does: a wave's attempts in one
transaction before any apply, never one transaction per app (real cluster, real git, real SQLite)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from deployctl.controller.loop import Controller, ControllerSettings, controller_runs
from deployctl.edges.audit.sqlite import SqliteStore
from deployctl.edges.git.mirror import Mirror
from deployctl.model.audit import Attempt, Finish
from deployctl.reconcile.observe import ClusterPool

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"
APPS = ("api", "web", "worker")


class CountingStore(SqliteStore):
    """A real SQLite store that also notes the size of each write (each is one transaction)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[tuple[str, int]] = []

    def start_many(self, attempts: Sequence[Attempt]) -> list[int]:
        self.writes.append(("start", len(attempts)))
        return super().start_many(attempts)

    def finish_many(self, finishes: Sequence[Finish]) -> None:
        self.writes.append(("finish", len(finishes)))
        super().finish_many(finishes)


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def test_the_controller_records_a_wave_of_three_apps_in_one_write(cluster, namespace, make_repo, tmp_path):
    for app in APPS:
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:initial")
    repo = make_repo("deploy.git", bare=True)
    config = "version: 1\napps:\n" + "".join(f"  {a}:\n    image: {IMAGE}/{a}\n    pin: tag\n" for a in APPS)
    config += f"environments:\n  staging:\n    namespace: {namespace}\n"
    repo.commit({"deployctl.yaml": config,
                 **{f"environments/staging/{a}.deploy": f"{sha(a)}\n" for a in APPS}}, message="Deploy three apps")
    store = CountingStore(tmp_path / "audit.db")
    controller = Controller(Mirror(str(repo.path), tmp_path / "mirror", branch="main"),
                            ClusterPool(kubeconfig=cluster.kubeconfig),
                            settings=ControllerSettings(runs=controller_runs(timeout=60, poll_interval=0.2)), store=store)
    try:
        result = controller.sync_once("watch")
    finally:
        store.close()
    assert result is not None and result.exit_code == 0, result
    assert sorted(o.result for o in result.outcomes) == ["succeeded"] * 3
    starts = [n for kind, n in store.writes if kind == "start"]
    finishes = [n for kind, n in store.writes if kind == "finish"]
    assert starts == [3]  # the three independent apps: one wave, one write, before any apply
    assert sum(finishes) == 3 and len(finishes) <= 3  # outcomes written as the rollouts end, a wave at a time
