"""Every reconcile outcome lands in the audit history: real reconciles, real SQLite, real git."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from kubernetes import client

from deployctl.app.run import run_reconcile
from deployctl.cli import main
from deployctl.edges.audit import url as audit_location
from deployctl.model import audit
from deployctl.model.audit_target import AuditTarget
from deployctl.reconcile.options import ReconcileOptions, Selection, Timing

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def config(ns: str) -> str:
    return (
        "version: 1\napps:\n"
        f"  api:\n    image: {IMAGE}/api\n    pin: tag\n"
        f"  web:\n    image: {IMAGE}/web\n    pin: tag\n    depends_on: [api]\n"
        f"  worker:\n    image: {IMAGE}/worker\n    pin: tag\n"
        f"environments:\n  staging:\n    namespace: {ns}\n"
    )


def files(ns: str, word: str) -> dict[str, str]:
    out = {"deployctl.yaml": config(ns)}
    for app in ("api", "web", "worker"):
        out[f"environments/staging/{app}.deploy"] = f"{sha(app + word)}\n* {app} {word}\n"
    return out


def records(url: str, **filters: object) -> list[audit.AuditRecord]:
    store = audit_location.open_store(url)
    try:
        return store.query(**filters)  # type: ignore[arg-type]
    finally:
        store.close()


def test_succeeded_failed_blocked_and_drift_outcomes_are_recorded_with_provenance(
    cluster, namespace, make_repo, tmp_path
):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    cluster.deployment(namespace, "api", never_ready=True, progress_deadline=2)
    cluster.deployment(namespace, "web")
    cluster.deployment(namespace, "worker")
    repo = make_repo()
    deploy_commit = repo.commit(files(namespace, "one"), message="Deploy shop one",
                                author=("Sam Engineer", "sam@example.com"),
                                trailers=["Reviewed-by: Rae Reviewer <rae@example.com>"])
    result = run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=cluster.kubeconfig, audit=AuditTarget(url), trigger="ci", options=ReconcileOptions(timing=Timing(timeout=60)))
    assert result.exit_code == 1
    by_app = {r.attempt.app: r for r in records(url)}
    assert by_app["api"].result == "failed" and "ProgressDeadlineExceeded" in (by_app["api"].error or "")
    assert by_app["web"].result == "blocked" and "dependency api failed" in (by_app["web"].error or "")
    worker = by_app["worker"]
    assert worker.result == "succeeded" and worker.error is None
    a = worker.attempt
    assert (a.env, a.namespace, a.new_sha, a.previous_sha) == ("staging", namespace, sha("workerone"), None)
    assert a.image == f"{IMAGE}/worker:{sha('workerone')}"
    assert a.deploy_commit == deploy_commit and a.file_commit == deploy_commit
    assert a.deploy_file == "environments/staging/worker.deploy"
    assert a.file_author == "Sam Engineer <sam@example.com>"
    assert a.file_commit_summary == "Deploy shop one"
    assert a.reviewers == ("Rae Reviewer <rae@example.com>",)
    assert a.trigger == "ci" and a.workloads == ("deployment/worker",)
    assert worker.duration_seconds is not None and worker.duration_seconds >= 0

    with cluster.api() as api:
        client.AppsV1Api(api).patch_namespaced_deployment(
            "worker", namespace,
            {"spec": {"template": {"spec": {"containers": [{"name": "worker", "image": f"{IMAGE}/worker:hot"}]}}}},
        )
    run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=cluster.kubeconfig, audit=AuditTarget(url), trigger="watch", options=ReconcileOptions(selection=Selection(apps=("worker",)), timing=Timing(timeout=60)))
    newest = records(url, app="worker")[0]
    assert newest.result == "drift-corrected"
    assert newest.attempt.trigger == "drift"
    assert newest.attempt.previous_sha == sha("workerone")


def _start_api_rollout(exe: Path, repo, cluster, url: str) -> subprocess.Popen[bytes]:
    """A ``deployctl reconcile --app api`` in its own process, its lock lease 2 s, waiting for a rollout that
    never finishes."""
    return subprocess.Popen(
        [str(exe), "reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--audit", url,
         "--app", "api", "--timeout", "120", "--lock-lease", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CI": ""},
    )


def _wait_applied_and_started(cluster, namespace, url: str, db: Path, image: str) -> None:
    """Until the api attempt is on record (started) and its image is applied (the run waits for the rollout)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if db.exists() and any(r.result == "started" for r in records(url)) and api_image(cluster, namespace) == image:
            return
        time.sleep(0.2)
    raise AssertionError("the api attempt was not recorded and applied within 60 s")


def api_image(cluster, namespace) -> str:
    with cluster.api() as api:
        return client.AppsV1Api(api).read_namespaced_deployment("api", namespace).spec.template.spec.containers[0].image


def api_lock(cluster, namespace, app="api"):
    with cluster.api() as api:
        try:
            return client.CoordinationV1Api(api).read_namespaced_lease(f"deployctl-lock-{app}", namespace).spec
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise


def wait_stale(cluster, namespace, app: str, holder: str | None) -> None:
    """Until the lock a killed run left behind is stale by two of its durations (by the API server's record)."""
    deadline = time.monotonic() + 60
    while (lock := api_lock(cluster, namespace, app)) is not None and lock.holder_identity == holder \
            and (datetime.now(UTC) - lock.renew_time).total_seconds() <= 2 * lock.lease_duration_seconds:
        assert time.monotonic() < deadline, "the killed run's lock did not go stale within 60 s"
        time.sleep(0.2)


def noop_api_run(repo, cluster, url: str):
    return run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=cluster.kubeconfig, audit=AuditTarget(url),
                         options=ReconcileOptions(selection=Selection(apps=("api",)),
                                                  timing=Timing(wait=False, timeout=60)))


def test_a_reconcile_killed_after_its_apply_leaves_a_started_record_that_the_next_no_op_run_closes_as_interrupted(
    cluster, namespace, make_repo, tmp_path
):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    cluster.deployment(namespace, "api", never_ready=True)  # the rollout never finishes: we kill it waiting
    cluster.deployment(namespace, "web")
    cluster.deployment(namespace, "worker")
    repo = make_repo()
    repo.commit(files(namespace, "one"))
    proc = _start_api_rollout(Path(sys.executable).with_name("deployctl"), repo, cluster, url)
    try:
        _wait_applied_and_started(cluster, namespace, url, tmp_path / "audit.db", f"{IMAGE}/api:{sha('apione')}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    (left,) = records(url)
    assert left.result == "started" and left.attempt.app == "api"
    wait_stale(cluster, namespace, "api", left.attempt.lock_holder)

    # The apply went through: api is in sync, and the next run has nothing to write. It still closes the
    # attempt the killed run left open (its lock holder is gone), and records nothing else.
    second = noop_api_run(repo, cluster, url)
    assert second.exit_code == 0 and [str(o.result) for o in second.outcomes] == ["in-sync"]
    assert [(r.id, r.result) for r in records(url)] == [(left.id, "interrupted")]  # closed, not duplicated
    assert api_lock(cluster, namespace) is None  # taken for the close, then released


def test_an_attempt_whose_lock_holder_is_alive_is_not_closed_by_a_no_op_run(cluster, namespace, make_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    cluster.deployment(namespace, "api", never_ready=True)  # the live run waits for its rollout, holding api's lock
    repo = make_repo()
    repo.commit(files(namespace, "one"))
    proc = _start_api_rollout(Path(sys.executable).with_name("deployctl"), repo, cluster, url)
    try:
        _wait_applied_and_started(cluster, namespace, url, tmp_path / "audit.db", f"{IMAGE}/api:{sha('apione')}")
        (live,) = records(url)
        # long enough that its lock would be stale by two leases had it not been renewed
        deadline = time.monotonic() + 60
        while (datetime.now(UTC) - api_lock(cluster, namespace).acquire_time).total_seconds() <= 5:
            assert time.monotonic() < deadline
            time.sleep(0.2)

        second = noop_api_run(repo, cluster, url)
        assert second.exit_code == 0 and [str(o.result) for o in second.outcomes] == ["in-sync"]
        assert [(r.id, r.result) for r in records(url)] == [(live.id, "started")]  # still running: left alone
        lock = api_lock(cluster, namespace)
        assert lock is not None and lock.holder_identity == live.attempt.lock_holder  # and its lock still its own
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_a_real_rollout_records_its_events_and_a_stalled_one_records_the_reason(
    cluster, namespace, make_repo, tmp_path
):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    cluster.deployment(namespace, "api", never_ready=True, progress_deadline=2)
    cluster.deployment(namespace, "web")
    cluster.deployment(namespace, "worker", replicas=2)
    repo = make_repo()
    repo.commit(files(namespace, "one"))
    run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=cluster.kubeconfig, audit=AuditTarget(url), trigger="ci",
                  options=ReconcileOptions(timing=Timing(timeout=60)))
    by_app = {r.attempt.app: r for r in records(url)}
    store = audit_location.open_store(url)
    try:
        worker = store.events_of(by_app["worker"].id)
        api = store.events_of(by_app["api"].id)
        web = store.events_of(by_app["web"].id)
    finally:
        store.close()

    kinds = [e.kind for e in worker]
    assert kinds[0] == "applied" and kinds[-1] == "verdict" and "revision" in kinds and "progress" in kinds
    assert f"image {IMAGE}/worker:{sha('workerone')}" in worker[0].detail
    assert any(e.kind == "revision" and "ReplicaSet worker-" in e.detail for e in worker)
    assert worker[-2].detail == "deployment/worker: 2/2 updated, 2/2 ready, 2/2 available"  # the counts that ended it
    assert worker[-1].detail.startswith("succeeded")
    assert [e.seq for e in worker] == list(range(1, len(worker) + 1))
    times = [e.at for e in worker]
    record = by_app["worker"]
    assert times == sorted(times) and record.attempt.started_at <= times[0] and times[-1] <= record.finished_at

    stalled = [e for e in api if e.kind == "stalled"]
    assert len(stalled) == 1 and "ProgressDeadlineExceeded" in stalled[0].detail
    assert api[-1].kind == "verdict" and api[-1].detail.startswith("failed")
    assert web == []  # blocked by its dependency: never applied, no rollout

    shown = CliRunner().invoke(main, ["history", "--audit", url, "--id", str(record.id), "-o", "json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert doc["id"] == record.id and doc["result"] == "succeeded"
    assert [(e["seq"], e["kind"], e["detail"]) for e in doc["events"]] == [(e.seq, e.kind, e.detail) for e in worker]
    table = CliRunner().invoke(main, ["history", "--audit", url, "--id", str(by_app["api"].id)])
    assert table.exit_code == 0 and "stalled" in table.output and "ProgressDeadlineExceeded" in table.output
    missing = CliRunner().invoke(main, ["history", "--audit", url, "--id", "999"])
    assert missing.exit_code != 0 and "no attempt with that id" in missing.output


class _Decisions:
    """An audit sink around the recorder that counts decision writes, or fails them."""

    def __init__(self, inner, *, fail: bool = False) -> None:
        self.inner, self.fail, self.calls = inner, fail, []

    def attempts_started(self, items, *, deploy_commit):
        return self.inner.attempts_started(items, deploy_commit=deploy_commit)

    def attempts_finished(self, items):
        self.inner.attempts_finished(items)

    def rollout_events(self, events):
        self.inner.rollout_events(events)

    def decisions(self, items, *, deploy_commit):
        self.calls.append([(change.app, result) for change, _, result, _ in items])
        if self.fail:
            raise audit.AuditError("audit: the disk is full")
        return self.inner.decisions(items, deploy_commit=deploy_commit)


@pytest.mark.parametrize("fail", [False, True])
def test_refusals_are_recorded_before_anything_is_applied_and_a_failed_record_is_said(
    cluster, namespace, make_repo, tmp_path, fail
):
    from deployctl.edges.git.repo import read_desired_state
    from deployctl.reconcile.observe import ClusterPool
    from deployctl.reconcile.reconciler import Prepared, Reconciler
    from deployctl.reconcile.recorder import AuditRecorder

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    for app in ("api", "web", "worker"):
        cluster.deployment(namespace, app)
    repo = make_repo()
    repo.commit(files(namespace, "one"))
    store = audit_location.open_store(url)
    try:
        sink = _Decisions(AuditRecorder(store, repo_path=repo.path, trigger="ci"), fail=fail)
        result = Reconciler(read_desired_state(repo.path), ClusterPool(kubeconfig=cluster.kubeconfig),
                            ReconcileOptions(timing=Timing(timeout=60)), audit=sink,
                            prepared=Prepared(refusals={("staging", "api"): "frozen: release week"})).run()
    finally:
        store.close()
    by_app = {o.app: o for o in result.outcomes}
    assert (by_app["api"].result, by_app["web"].result, by_app["worker"].result) == ("refused", "blocked", "succeeded")
    assert sink.calls == [[("api", "refused")], [("web", "blocked")]]  # one write per wave, the plan's first
    if fail:
        assert "audit record not written: audit: the disk is full" in by_app["api"].message
        assert [r.attempt.app for r in records(url)] == ["worker"]
    else:
        ids = {r.attempt.app: r.id for r in records(url)}
        assert ids["api"] < ids["worker"]  # on record before the first apply
        assert {r.attempt.app: r.error for r in records(url)}["api"] == "frozen: release week"
