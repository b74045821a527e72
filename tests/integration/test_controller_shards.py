"""Sharded `deployctl watch` (--shards): replicas share the apps by slot Leases, on the real control plane and a
real PostgreSQL audit store, each replica a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from deployctl.controller.shards import FENCE_ANNOTATION, FencedWorkloads, FenceError
from deployctl.edges.audit.url import open_store
from deployctl.edges.kube.cluster import Cluster
from deployctl.rules.shards import parse_fence
from tests.integration.test_controller import DEPLOYCTL, IMAGE, Watch, sha, wait_for

pytestmark = pytest.mark.integration

APPS = tuple(f"app{i}" for i in range(5))
ENVS = ("staging", "production")
SLOTS = 8
LEASE = ("--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s")
FAILOVER = 6 + 2 * 1  # lease duration + 2 retry periods


def config(namespaces: dict[str, str]) -> str:
    lines = ["version: 1", "apps:"]
    for app in APPS:
        lines += [f"  {app}:", f"    image: {IMAGE}/{app}", "    pin: tag"]
    lines.append("environments:")
    for env, ns in namespaces.items():
        lines += [f"  {env}:", f"    namespace: {ns}"]
    return "\n".join(lines) + "\n"


def deploy_all(word: str) -> dict[str, str]:
    return {f"environments/{env}/{app}.deploy": f"{sha(app + word)}\n" for env in ENVS for app in APPS}


@pytest.fixture
def two_envs(cluster, namespace):
    """staging in the test namespace, production in a second one; every app deployed in both."""
    other = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(other)
    namespaces = {"staging": namespace, "production": other}
    for ns in namespaces.values():
        for app in APPS:
            cluster.deployment(ns, app, image=f"{IMAGE}/{app}:initial")
    yield namespaces
    cluster.delete_namespace(other)


@pytest.fixture
def shard_repo(make_repo, two_envs):
    repo = make_repo("deploy.git", bare=True)
    repo.commit({"deployctl.yaml": config(two_envs), **deploy_all("-1")}, message="First deploy")
    return repo


@pytest.fixture
def replicas(tmp_path, shard_repo, cluster, namespace, postgres_db):
    started: dict[str, Watch] = {}

    def start(name: str, interval: str = "3s") -> Watch:
        w = Watch(tmp_path, shard_repo.path, kubeconfig=cluster.kubeconfig, audit=postgres_db, name=name,
                  interval=interval, lease_namespace=namespace, extra=("--shards", str(SLOTS), *LEASE))
        started[name] = w
        return w

    yield start
    for w in started.values():
        if w.proc.poll() is None:
            os.kill(w.proc.pid, signal.SIGCONT)
        w.stop()


def images(cluster, namespaces: dict[str, str]) -> dict[tuple[str, str], str]:
    return {(env, app): cluster.read_deployment(ns, app).spec.template.spec.containers[0].image
            for env, ns in namespaces.items() for app in APPS}


def all_at(cluster, namespaces, word: str) -> bool:
    return images(cluster, namespaces) == {(env, app): f"{IMAGE}/{app}:{sha(app + word)}" for env in ENVS for app in APPS}


def held(ws) -> float:
    return sum(w.metric("deployctl_shard_slots_held") for w in ws)


def attempts(url: str, word: str):
    store = open_store(url)
    try:
        return [r for r in store.query() if r.attempt.new_sha == sha(r.attempt.app + word)]
    finally:
        store.close()


def fences(cluster, namespaces) -> dict[tuple[str, str], tuple[str, int, int] | None]:
    return {(env, app): parse_fence(cluster.read_deployment(ns, app).metadata.annotations.get(FENCE_ANNOTATION),
                                    "deployctl")
            for env, ns in namespaces.items() for app in APPS}


def test_three_replicas_apply_a_commit_changing_every_app_once_per_app(
        cluster, two_envs, shard_repo, replicas, postgres_db):
    ws = [replicas(name) for name in ("r1", "r2", "r3")]
    wait_for("every slot held by some replica", lambda: held(ws) == SLOTS, timeout=60, step=0.5)
    wait_for("the first commit applied", lambda: all_at(cluster, two_envs, "-1"), timeout=120, step=0.5)

    shard_repo.commit(deploy_all("-2"), message="Deploy every app")
    wait_for("the second commit applied", lambda: all_at(cluster, two_envs, "-2"), timeout=120, step=0.5)
    records = wait_for("every attempt finished", lambda: (lambda rs: rs if len(rs) >= len(APPS) * len(ENVS) and all(
        r.result != "started" for r in rs) else None)(attempts(postgres_db, "-2")), timeout=60, step=0.5)

    per_key = Counter((r.attempt.env, r.attempt.app, r.attempt.new_sha) for r in records)
    assert set(per_key.values()) == {1} and len(per_key) == len(APPS) * len(ENVS)  # once per app, not per replica
    assert all(r.result == "succeeded" for r in records)
    assert all(" fence=deployctl/" in (r.attempt.lock_holder or "") for r in records)  # each carries its token
    writers = {(r.attempt.lock_holder or "").split(" fence=")[0].rsplit("-", 1)[0] for r in records}
    assert len(writers) > 1  # shared: more than one replica (process) wrote
    # the token on each workload is the one on its attempt
    on_workload = fences(cluster, two_envs)
    for r in records:
        _, slot, token = on_workload[(r.attempt.env, r.attempt.app)]
        assert r.attempt.lock_holder.endswith(f" fence=deployctl/{slot}:{token}")


def test_a_webhook_to_one_replica_gets_every_replicas_apps_applied(cluster, two_envs, shard_repo, replicas):
    ws = [replicas(name, interval="1h") for name in ("r1", "r2", "r3")]
    wait_for("every slot held", lambda: held(ws) == SLOTS, timeout=60, step=0.5)
    wait_for("the first commit applied", lambda: all_at(cluster, two_envs, "-1"), timeout=120, step=0.5)
    head = shard_repo.commit(deploy_all("-2"), message="Deploy every app")
    assert ws[0].github_push(head) == 202
    # the interval is an hour: the push reached the other replicas through the membership Leases
    wait_for("every app at the pushed commit", lambda: all_at(cluster, two_envs, "-2"), timeout=60, step=0.25)
    # every replica measured the queue time of the webhook's run, from the push (or its announcement) on
    for w in ws:
        wait_for(f"{w} counted a webhook run's queue time",
                 lambda w=w: w.metric('deployctl_reconcile_queue_seconds_count{trigger="webhook"}') >= 1,
                 timeout=30, step=0.25)


def test_the_apps_of_a_killed_replica_are_reconciled_by_the_others_within_the_failover_bound(
        cluster, two_envs, shard_repo, replicas, postgres_db):
    ws = [replicas(name) for name in ("r1", "r2", "r3")]
    wait_for("every slot held", lambda: held(ws) == SLOTS, timeout=60, step=0.5)
    wait_for("the first commit applied", lambda: all_at(cluster, two_envs, "-1"), timeout=120, step=0.5)
    victim = max(ws, key=lambda w: w.metric("deployctl_shard_slots_held"))
    assert victim.metric("deployctl_shard_slots_held") > 0
    victim.proc.kill()
    victim.proc.wait(10)
    survivors = [w for w in ws if w is not victim]

    shard_repo.commit(deploy_all("-2"), message="Deploy every app")
    # the survivors take the victim's slots once its leases expire (lease duration + 2 retry periods) ...
    wait_for("the survivors hold every slot", lambda: held(survivors) == SLOTS, timeout=FAILOVER + 20, step=0.25)
    # ... and reconcile its apps on taking them (not at the next interval)
    wait_for("every app at the new commit", lambda: all_at(cluster, two_envs, "-2"), timeout=60, step=0.25)
    records = attempts(postgres_db, "-2")
    per_key = Counter((r.attempt.env, r.attempt.app) for r in records)
    assert set(per_key.values()) == {1}


def test_a_replica_stopped_with_sigterm_hands_its_slots_over_without_waiting_out_its_leases(
        cluster, two_envs, shard_repo, replicas):
    ws = [replicas(name) for name in ("r1", "r2", "r3")]
    wait_for("every slot held", lambda: held(ws) == SLOTS, timeout=60, step=0.5)
    leaving = max(ws, key=lambda w: w.metric("deployctl_shard_slots_held"))
    others = [w for w in ws if w is not leaving]
    leaving.proc.send_signal(signal.SIGTERM)
    assert leaving.proc.wait(30) == 0
    # freed at once: the others take the slots in their next rounds, well within one lease duration (6s)
    wait_for("the others hold every slot", lambda: held(others) == SLOTS, timeout=6, step=0.1)


def test_a_fourth_replica_takes_its_share_and_no_slot_stays_unowned_for_a_lease_duration(
        cluster, namespace, two_envs, shard_repo, replicas, postgres_db):
    import time

    ws = [replicas(name) for name in ("r1", "r2", "r3")]
    wait_for("every slot held", lambda: held(ws) == SLOTS, timeout=60, step=0.5)
    wait_for("the first commit applied", lambda: all_at(cluster, two_envs, "-1"), timeout=120, step=0.5)
    before = {slot: holder for slot, (holder, _) in slot_leases(cluster, namespace).items()}
    fourth = replicas("r4")
    free_since: dict[int, float] = {}
    longest = 0.0

    def settled() -> bool:
        nonlocal longest
        now = time.monotonic()
        for slot, (holder, _) in slot_leases(cluster, namespace).items():
            if holder:
                free_since.pop(slot, None)
            else:
                longest = max(longest, now - free_since.setdefault(slot, now))
        return fourth.metric("deployctl_shard_slots_held") == SLOTS // 4 and held([*ws, fourth]) == SLOTS

    wait_for("the fourth replica holding its share", settled, timeout=60, step=0.2)
    assert longest < 6  # a handed-back slot is taken within a round or two, never left for a lease duration
    after = {slot: holder for slot, (holder, _) in slot_leases(cluster, namespace).items()}
    assert sum(1 for s in after if after[s] != before.get(s)) == SLOTS // 4  # only the fourth's share moved
    shard_repo.commit(deploy_all("-2"), message="Deploy every app")
    wait_for("every app at the new commit", lambda: all_at(cluster, two_envs, "-2"), timeout=90, step=0.25)
    per_key = Counter((r.attempt.env, r.attempt.app) for r in attempts(postgres_db, "-2"))
    assert set(per_key.values()) == {1} and len(per_key) == len(APPS) * len(ENVS)


def test_a_ci_reconcile_beside_the_replicas_never_writes_an_app_at_the_same_time(
        cluster, two_envs, shard_repo, replicas, postgres_db):
    from deployctl.app.run import run_reconcile
    from deployctl.model.audit_target import AuditTarget
    from deployctl.reconcile.options import ReconcileOptions, Timing

    ws = [replicas(name, interval="0.5s") for name in ("r1", "r2", "r3")]
    wait_for("every slot held", lambda: held(ws) == SLOTS, timeout=60, step=0.5)
    wait_for("the first commit applied", lambda: all_at(cluster, two_envs, "-1"), timeout=120, step=0.5)
    head = shard_repo.commit(deploy_all("-2"), message="Deploy every app")
    # CI applies the same commit while the replicas (every 0.5s) do: the app locks let one writer per app in
    ci = run_reconcile(repo=str(shard_repo.path), ref=head, kubeconfig=cluster.kubeconfig, audit=AuditTarget(postgres_db),
                       trigger="ci", options=ReconcileOptions(timing=Timing(timeout=120)))
    assert ci.exit_code == 0, [(o.env, o.app, str(o.result), o.message) for o in ci.outcomes if str(o.result) != "succeeded"]
    wait_for("every app at the new commit", lambda: all_at(cluster, two_envs, "-2"), timeout=60, step=0.25)
    records = wait_for("every attempt finished", lambda: (lambda rs: rs if len(rs) >= len(APPS) * len(ENVS) and all(
        r.result != "started" for r in rs) else None)(attempts(postgres_db, "-2")), timeout=60, step=0.5)
    per_key = Counter((r.attempt.env, r.attempt.app) for r in records)
    assert set(per_key.values()) == {1}  # whoever came second found the app in sync
    def run_of(r) -> str:  # the run that wrote it: its lock identity, without the slot's fence
        return (r.attempt.lock_holder or "").split(" fence=")[0]

    # one writer per app at a time, CI or replica: attempts of two runs on one app never overlap
    for a in records:
        for b in records:
            if a.id < b.id and (a.attempt.env, a.attempt.app) == (b.attempt.env, b.attempt.app) and run_of(a) != run_of(b):
                assert a.finished_at is not None and b.finished_at is not None
                assert not (a.attempt.started_at < b.finished_at and b.attempt.started_at < a.finished_at), (a, b)
    # (that two apps of one environment are written at once by two runs is shown without a race in
    # tests/integration/test_safe_ci.py::test_ci_waits_for_the_app_a_replica_writes_and_meanwhile_writes_another_app_of_that_environment)


def slot_leases(cluster, namespace) -> dict[int, tuple[str | None, int]]:
    """slot -> (holder, leaseTransitions) as the slot Leases say now."""
    from kubernetes import client

    with cluster.api() as api:
        leases = client.CoordinationV1Api(api).list_namespaced_lease(namespace).items
    return {int(lease.metadata.name.rsplit("-", 1)[1]): (lease.spec.holder_identity, lease.spec.lease_transitions or 0)
            for lease in leases if lease.metadata.name.startswith("deployctl-slot-")}


def test_a_replica_paused_past_its_lease_writes_nothing_with_its_stale_token(
        cluster, namespace, two_envs, shard_repo, replicas, postgres_db):
    ws = {name: replicas(name) for name in ("r1", "r2", "r3")}
    wait_for("every slot held", lambda: held(ws.values()) == SLOTS, timeout=60, step=0.5)
    wait_for("the first commit applied", lambda: all_at(cluster, two_envs, "-1"), timeout=120, step=0.5)
    name, paused = max(ws.items(), key=lambda kv: kv[1].metric("deployctl_shard_slots_held"))
    stale = {slot: token for slot, (holder, token) in slot_leases(cluster, namespace).items() if holder == name}
    assert stale
    os.kill(paused.proc.pid, signal.SIGSTOP)
    others = [w for w in ws.values() if w is not paused]
    try:
        shard_repo.commit(deploy_all("-2"), message="Deploy every app")
        wait_for("the others hold every slot", lambda: held(others) == SLOTS, timeout=FAILOVER + 20, step=0.25)
        wait_for("every app at the new commit", lambda: all_at(cluster, two_envs, "-2"), timeout=60, step=0.25)
    finally:
        os.kill(paused.proc.pid, signal.SIGCONT)
    # resumed: it finds its slots taken, and acts again only on slots it takes anew (under new tokens)
    wait_for("the resumed replica drops its stale slots",
             lambda: "the slot lease is no longer ours" in paused.log.read_text(), timeout=30, step=0.25)
    shard_repo.commit(deploy_all("-3"), message="Deploy every app again")
    wait_for("every app at the third commit", lambda: all_at(cluster, two_envs, "-3"), timeout=90, step=0.25)

    stale_fences = {f" fence=deployctl/{slot}:{token}" for slot, token in stale.items()}
    store = open_store(postgres_db)
    try:
        later = [r for r in store.query() if r.attempt.new_sha in {sha(a + w) for a in APPS for w in ("-2", "-3")}]
    finally:
        store.close()
    assert later and not [r for r in later if any((r.attempt.lock_holder or "").endswith(f) for f in stale_fences)]
    for (env, app), fence in fences(cluster, two_envs).items():
        assert fence is not None
        if fence[1] in stale:
            assert fence[2] > stale[fence[1]], (env, app)


def test_an_apply_with_an_older_token_than_the_workloads_is_refused(cluster, namespace):
    from deployctl.model.workload import Workload

    cluster.deployment(namespace, "api", image=f"{IMAGE}/api:initial")
    real = Cluster(kubeconfig=cluster.kubeconfig)

    class Runs:  # the slot and token this replica holds: only the token matters here
        set_name = "deployctl"
        token = 5

        def fence(self, env, app):
            return 3, self.token

    runs = Runs()
    fenced = FencedWorkloads(real, runs, {namespace: "staging"})  # type: ignore[arg-type]

    def live() -> Workload:
        return next(w for w in real.list_kind(namespace, "Deployment") if w.name == "api")

    fenced.apply_image(live(), container="api", image=f"{IMAGE}/api:new", annotations={})
    assert live().annotations[FENCE_ANNOTATION] == "deployctl/3:5"
    runs.token = 4  # a replica that lost the slot to the holder of token 5
    with pytest.raises(FenceError, match="newer than this replica's 4"):
        fenced.apply_image(live(), container="api", image=f"{IMAGE}/api:stale", annotations={})
    # also when it read the workload before the newer holder wrote it: the resourceVersion changed, it reads again
    before = live()
    runs.token = 6
    fenced.apply_image(before, container="api", image=f"{IMAGE}/api:newer", annotations={})
    runs.token = 5
    with pytest.raises(FenceError, match="carries fencing token 6"):
        fenced.apply_image(before, container="api", image=f"{IMAGE}/api:stale", annotations={})
    assert cluster.read_deployment(namespace, "api").spec.template.spec.containers[0].image == f"{IMAGE}/api:newer"


def test_sharding_refuses_a_sqlite_audit_store(tmp_path: Path, make_repo):
    repo = make_repo("deploy.git", bare=True)
    repo.commit({"README.md": "x\n"}, message="init")
    result = subprocess.run([DEPLOYCTL, "watch", "--repo", str(repo.path), "--shards", "8", "--audit",
                             f"sqlite:///{tmp_path / 'audit.db'}", "--listen", "127.0.0.1:0",
                             "--mirror-dir", str(tmp_path / "m")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "--shards runs several replicas on one audit history: give the PostgreSQL audit store" in result.stderr
    assert "Traceback" not in result.stderr
