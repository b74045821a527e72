"""`deployctl watch` against the real control plane and real git repos, run as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from deployctl.controller.webhook import github_signature
from deployctl.edges.audit.url import open_store
from tests.integration.test_reconcile_audit import wait_stale

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOYCTL = str(Path(sys.executable).with_name("deployctl"))
IMAGE = "registry.example.com/shop"
SECRET = "test-webhook-secret"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def config(namespace: str, apps=("api",)) -> str:
    lines = ["version: 1", "apps:"]
    for app in apps:
        lines += [f"  {app}:", f"    image: {IMAGE}/{app}", "    pin: tag"]  # no registry in these tests
    lines += ["environments:", "  staging:", f"    namespace: {namespace}"]
    return "\n".join(lines) + "\n"


def deploy(app: str, word: str) -> dict[str, str]:
    return {f"environments/staging/{app}.deploy": f"{sha(word)}\n"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Watch:
    """One `deployctl watch` process bound to 127.0.0.1."""

    def __init__(self, tmp_path: Path, repo: Path | str, *, kubeconfig: str, audit: str, name: str = "c",
                 interval: str = "0.5s", lease_namespace: str | None = None, extra: tuple[str, ...] = (),
                 preexec_fn=None, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log = tmp_path / f"watch-{name}.log"
        args = [DEPLOYCTL, "--log-level", "info", "watch", "--repo", str(repo), "--interval", interval,
                "--listen", f"127.0.0.1:{self.port}", "--audit", audit, "--kubeconfig", kubeconfig,
                "--mirror-dir", str(tmp_path / f"mirror-{name}"), "--timeout", "60s"]
        if lease_namespace:
            args += ["--lease-namespace", lease_namespace, "--identity", name, "--lease-duration", "2s",
                     "--renew-deadline", "1.5s", "--retry-period", "0.25s"]
        else:
            args.append("--no-leader-election")
        args += extra  # last: an option given here wins over the defaults above
        environ = {**os.environ, "DEPLOYCTL_WEBHOOK_SECRET": SECRET, **(env or {})}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environ,
                                         preexec_fn=preexec_fn)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        req = urllib.request.Request(self.url(path), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def github_push(self, after: str, *, secret: str = SECRET) -> int:
        body = json.dumps({"ref": "refs/heads/main", "after": after}).encode()
        return self.post("/hooks/github", body, {
            "X-GitHub-Event": "push", "Content-Type": "application/json",
            "X-Hub-Signature-256": github_signature(secret.encode(), body)})

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"deployctl watch exited {self.proc.returncode}:\n{self.log.read_text()}")
            return self.get("/readyz")[0] == 200
        wait_for("readyz", ready, timeout=timeout)

    def metric(self, name: str) -> float:
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def watches():
    started: list[Watch] = []
    yield started
    for w in started:
        w.stop()


@pytest.fixture
def bare(make_repo, namespace, cluster):
    """A bare deploy repo pointing staging at the test namespace, and a labelled Deployment `api`."""
    cluster.deployment(namespace, "api", image=f"{IMAGE}/api:initial")
    repo = make_repo("deploy.git", bare=True)
    repo.commit({"deployctl.yaml": config(namespace), **deploy("api", "api-1")}, message="First deploy")
    return repo


def sync_requests(w: Watch) -> int:
    """How many syncs the controller was asked for so far (its log's ``sync.requested`` events)."""
    events = [json.loads(line) for line in w.log.read_text().splitlines() if line.startswith("{")]
    return sum(1 for e in events if e.get("event") == "sync.requested")


def image_of(cluster, namespace, name="api"):
    return cluster.read_deployment(namespace, name).spec.template.spec.containers[0].image


def audit_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


def test_signed_webhook_for_a_pushed_commit_gets_the_change_applied(cluster, namespace, bare, tmp_path, watches):
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="1h")
    watches.append(w)
    w.wait_ready()
    wait_for("the first deploy", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}", timeout=60)

    head = bare.commit(deploy("api", "api-2"), message="Deploy api 2")
    assert w.github_push(head) == 202
    # the interval is an hour: only the webhook can have started this run (its trigger is on record below)
    wait_for("api-2 applied", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-2')}", timeout=60)

    def finished():
        records = open_store(audit_url(tmp_path)).query(app="api")
        return records[0] if records and records[0].result != "started" else None
    newest = wait_for("the attempt's outcome", finished, timeout=60)
    assert (newest.attempt.new_sha, newest.attempt.trigger, newest.result) == (sha("api-2"), "webhook", "succeeded")
    assert newest.attempt.deploy_commit == head
    assert w.metric('deployctl_webhook_requests_total{provider="github",result="accepted"}') == 1


def test_wrong_signature_gets_401_and_triggers_nothing(cluster, namespace, bare, tmp_path, watches):
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="1h")
    watches.append(w)
    w.wait_ready()
    reconciles = w.metric("deployctl_reconciles_total")
    requested = sync_requests(w)
    head = bare.commit(deploy("api", "api-2"), message="Deploy api 2")

    assert w.github_push(head, secret="not-the-secret") == 401
    assert w.post("/hooks/gitlab", b"{}", {"X-Gitlab-Token": "nope", "X-Gitlab-Event": "Push Hook"}) == 401
    assert w.post("/hooks/generic", b"", {"Authorization": "Bearer nope"}) == 401
    assert w.post("/hooks/generic", b"", {}) == 401
    assert w.post("/hooks/generic", b"x" * (2 * 1024 * 1024), {"Authorization": f"Bearer {SECRET}"}) == 413
    assert w.post("/hooks/generic", b"{not json", {"Authorization": f"Bearer {SECRET}"}) == 400
    # A webhook asks for a sync (and logs it) before it answers: every answer is in, so none was asked for.
    assert sync_requests(w) == requested
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}"
    assert w.metric("deployctl_reconciles_total") == reconciles
    assert w.metric('deployctl_webhook_requests_total{provider="github",result="unauthorized"}') == 1


def test_drift_made_with_a_direct_patch_is_corrected_and_audited(
        cluster, namespace, bare, tmp_path, watches):
    from kubernetes import client

    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="0.5s")
    watches.append(w)
    w.wait_ready()
    wanted = f"{IMAGE}/api:{sha('api-1')}"
    cluster.wait_deployment_available(namespace, "api")
    with cluster.api() as api:  # what `kubectl set image` does
        client.AppsV1Api(api).patch_namespaced_deployment("api", namespace, {"spec": {"template": {"spec": {
            "containers": [{"name": "api", "image": f"{IMAGE}/api:hotfix"}]}}}})
    # (how soon: bench/latency.py; here, that it is put back, and on record as drift)
    wait_for("drift corrected", lambda: image_of(cluster, namespace) == wanted, timeout=60)

    def drift_record():
        records = open_store(audit_url(tmp_path)).query(app="api")
        return [r for r in records if r.result == "drift-corrected"]
    record = wait_for("the drift-corrected record", drift_record, timeout=60)[0]
    assert record.attempt.trigger == "drift"
    assert record.attempt.previous_sha == sha("api-1")
    # the record is written mid-run, the metric when the run returns (after its environment lock is released)
    assert wait_for("the drift metric", lambda: w.metric("deployctl_drift_corrections_total") >= 1, timeout=60)


def test_a_ci_run_killed_after_its_apply_is_closed_as_interrupted_by_a_controller_run_with_nothing_to_write(
        cluster, namespace, bare, tmp_path, watches):
    url = audit_url(tmp_path)
    cluster.deployment(namespace, "slow", never_ready=True)  # the CI run waits for it forever: we kill it there
    bare.commit({"deployctl.yaml": config(namespace, apps=("api", "slow")), **deploy("api", "api-1"),
                 **deploy("slow", "slow-1")}, message="Deploy slow")
    ci = subprocess.Popen([DEPLOYCTL, "reconcile", "--repo", str(bare.path), "--kubeconfig", cluster.kubeconfig,
                           "--audit", url, "--app", "slow", "--timeout", "120", "--lock-lease", "2"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CI": ""})
    try:
        def applied():
            return (tmp_path / "audit.db").exists() and image_of(cluster, namespace, "slow") == \
                f"{IMAGE}/slow:{sha('slow-1')}" and [r for r in open_store(url).query(app="slow")]
        (left,) = wait_for("the slow attempt on record and applied", applied, timeout=60)
    finally:
        ci.kill()
        ci.wait(10)
    assert left.result == "started"
    wait_stale(cluster, namespace, "slow", left.attempt.lock_holder)

    # slow is in sync: the controller has nothing to write there, and still closes the attempt once the killed
    # run's lock is stale (it looks at each run's start)
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=url, interval="0.5s")
    watches.append(w)  # (not ready until its first run ends: that run waits for slow, which never gets ready)
    (closed,) = wait_for("the killed run's attempt closed", lambda: [
        r for r in open_store(url).query(app="slow") if r.id == left.id and r.result == "interrupted"], timeout=60)
    assert closed.error and "no outcome" in closed.error
    assert image_of(cluster, namespace, "slow") == f"{IMAGE}/slow:{sha('slow-1')}"


def test_a_controller_left_on_an_older_head_records_its_decision_once_not_every_interval(
        cluster, namespace, bare, tmp_path, watches):
    from deployctl.app.run import run_reconcile
    from deployctl.model.audit_target import AuditTarget
    from deployctl.reconcile.options import ReconcileOptions, Timing

    main_head = bare.head
    # CI applied a newer deploy commit (on its own branch) than the one the controller's branch points at.
    ci = bare.commit(deploy("api", "api-2"), branch="ci", parents=[main_head], message="CI deploy")
    run_reconcile(repo=str(bare.path), ref=ci, kubeconfig=cluster.kubeconfig, audit=AuditTarget(audit_url(tmp_path)),
                  trigger="ci", options=ReconcileOptions(timing=Timing(timeout=60)))

    def decisions():
        store = open_store(audit_url(tmp_path))
        try:
            return [r for r in store.query(app="api") if r.result in ("skipped", "refused")]
        finally:
            store.close()

    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="0.2s")
    watches.append(w)
    w.wait_ready()
    first = wait_for("the first run's decision", decisions, timeout=30)
    runs = w.metric("deployctl_reconciles_total")
    wait_for("10 more intervals", lambda: w.metric("deployctl_reconciles_total") >= runs + 10, timeout=60)
    assert decisions() == first and len(first) == 1  # one record for one decision, not one per interval
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-2')}"  # and nothing moved backwards

    # A new head on the branch: the same refusal for another reason (another commit) is a new record.
    bare.commit({"README.md": "older still than CI's\n"}, message="Docs")
    wait_for("the new decision", lambda: len(decisions()) == 2, timeout=30)
    runs = w.metric("deployctl_reconciles_total")
    wait_for("10 more intervals", lambda: w.metric("deployctl_reconciles_total") >= runs + 10, timeout=60)
    newest, oldest = decisions()
    assert len(decisions()) == 2 and newest.error != oldest.error


def lease_holder(cluster, namespace, name="deployctl"):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with cluster.api() as api:
        try:
            lease = client.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
        except ApiException:
            return None
    return lease.spec.holder_identity


def test_two_controllers_elect_one_leader_and_the_other_takes_over_when_it_dies(
        cluster, namespace, bare, tmp_path, watches):
    a = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), name="a",
              lease_namespace=namespace)
    b = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), name="b",
              lease_namespace=namespace)
    watches += [a, b]
    holder = wait_for("a leader", lambda: lease_holder(cluster, namespace), timeout=60)  # two processes starting on a busy machine
    leader, standby = (a, b) if holder == "a" else (b, a)
    leader.wait_ready()
    # only the leader is ready: the Service sends webhooks to it (0: the standby's server is not up yet)
    assert wait_for("the standby's answer", lambda: standby.get("/readyz")[0], timeout=60) == 503
    assert leader.metric("deployctl_leader") == 1
    assert standby.metric("deployctl_leader") == 0
    assert standby.metric("deployctl_reconciles_total") == 0
    # handed on to the leader. Until the standby's first read of the lease it answers 503 and the sender
    # retries, as GitHub does: retry too (a standby started late on a busy machine reads it late).
    wait_for("the standby to hand the hook on", lambda: standby.github_push(bare.head) == 202, timeout=60, step=0.2)
    assert standby.metric('deployctl_webhook_requests_total{provider="github",result="forwarded"}') == 1
    wait_for("the first deploy", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}", timeout=60)

    leader.proc.send_signal(signal.SIGKILL)  # no chance to release the lease
    leader.proc.wait(30)
    bare.commit(deploy("api", "api-2"), message="Deploy api 2")
    # (how soon after the 2 s lease: bench; here, that the standby takes the lease and carries on)
    wait_for("the standby reconciles the next commit",
             lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-2')}", timeout=60)
    assert lease_holder(cluster, namespace) == ("b" if leader is a else "a")
    assert wait_for("the new leader's gauge", lambda: standby.metric("deployctl_leader") == 1, timeout=30)


def test_sigterm_mid_rollout_exits_cleanly_closes_the_audit_record_and_releases_the_lease(
        cluster, namespace, make_repo, tmp_path, watches):
    cluster.deployment(namespace, "api", image=f"{IMAGE}/api:initial", never_ready=True)
    repo = make_repo("deploy.git", bare=True)
    repo.commit({"deployctl.yaml": config(namespace), **deploy("api", "api-1")})
    w = Watch(tmp_path, repo.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), name="term",
              lease_namespace=namespace)
    watches.append(w)

    def started():
        return [r for r in open_store(audit_url(tmp_path)).query(app="api") if r.result == "started"]
    wait_for("the rollout to start", started, timeout=30)
    assert lease_holder(cluster, namespace) == "term"
    w.proc.send_signal(signal.SIGTERM)
    # it stops mid-rollout (the rollout never ends and --timeout is 60 s): exit 0 well before that
    assert w.proc.wait(45) == 0, w.log.read_text()

    records = open_store(audit_url(tmp_path)).query(app="api")
    assert len(records) == 1
    assert records[0].result == "interrupted"
    assert "SIGTERM" in (records[0].error or "")
    assert lease_holder(cluster, namespace) is None  # released: the standby need not wait it out
    events = [json.loads(line) for line in w.log.read_text().splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e["event"].startswith("controller.")][-1] == "controller.exited"
    assert SECRET not in w.log.read_text()


# -- RBAC ---------------------------------------------------------------------------------------


def _manifests(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / name).read_text()) if d]


def _sa_kubeconfig(cluster, namespace: str, path: Path) -> str:
    from kubernetes import client

    with cluster.api() as api:
        token = client.CoreV1Api(api).create_namespaced_service_account_token(
            "deployctl", namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    cluster_entry = admin["clusters"][0]["cluster"]
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": cluster_entry}],
        "users": [{"name": "deployctl", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "deployctl"}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_the_rbac_manifests_are_enough_for_the_controller_and_nothing_more(
        cluster, namespace, bare, tmp_path, watches):
    from kubernetes import client, utils

    from deployctl.edges.kube.cluster import Cluster, ClusterError

    home = f"t-ctl-{uuid.uuid4().hex[:8]}"
    other = f"t-other-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(home)
    cluster.create_namespace(other)
    try:
        cluster.deployment(other, "api", image=f"{IMAGE}/api:other")
        docs = _manifests("serviceaccount.yaml") + _manifests("rbac-lease.yaml")
        docs += _manifests("rbac-managed-namespace.yaml")
        with cluster.api() as api:
            for doc in docs:
                if doc["metadata"].get("namespace") == "deployctl":
                    doc["metadata"]["namespace"] = home
                elif doc["metadata"].get("namespace") == "shop-staging":
                    doc["metadata"]["namespace"] = namespace
                for subject in doc.get("subjects", []):
                    subject["namespace"] = home
                utils.create_from_dict(api, doc)
        kubeconfig = _sa_kubeconfig(cluster, home, tmp_path / "sa.kubeconfig")

        w = Watch(tmp_path, bare.path, kubeconfig=kubeconfig, audit=audit_url(tmp_path), name="sa",
                  lease_namespace=home, extra=("--allow-namespace", namespace))
        watches.append(w)
        w.wait_ready()
        wait_for("the first deploy", lambda: image_of(cluster, namespace) == f"{IMAGE}/api:{sha('api-1')}", timeout=60)
        assert lease_holder(cluster, home) == "sa"

        def outcome():
            records = open_store(audit_url(tmp_path)).query(app="api")
            return records[0].result if records and records[0].result != "started" else None
        assert wait_for("the first deploy's outcome", outcome, timeout=60) == "succeeded"

        sa = Cluster(kubeconfig=kubeconfig)
        with pytest.raises(ClusterError) as listed:
            sa.list_workloads(other)
        assert listed.value.status == 403
        mine = sa.list_workloads(namespace)[0]
        theirs = mine.__class__.from_object(
            client.ApiClient().sanitize_for_serialization(cluster.read_deployment(other, "api")), "Deployment")
        with pytest.raises(ClusterError) as patched:
            sa.apply_image(theirs, container="api", image=f"{IMAGE}/api:evil", annotations={})
        assert patched.value.status == 403
        assert image_of(cluster, other) == f"{IMAGE}/api:other"
    finally:
        cluster.delete_namespace(home)
        cluster.delete_namespace(other)
