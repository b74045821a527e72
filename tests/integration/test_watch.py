"""Waiting by watching, failing fast, DaemonSets and CronJobs: against the real control plane.

The API server's audit log (``LocalCluster.audited``) is the evidence of how many LISTs and
watches a wait made in the test's namespace; kubectl built from the same release gives the
DaemonSet verdicts to match.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
import uuid
from typing import Any

import pytest

from deployctl.devtools.localcluster import build, controlplane
from deployctl.edges.kube.cluster import Cluster, collection_path
from deployctl.edges.kube.informer import Informer
from tests.integration.test_reconcile import IMAGE, config, deploy_files, reconcile_repo, sha

pytestmark = pytest.mark.integration


def pod_template(name: str, image: str, *, never_ready: bool = False) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    if never_ready:
        labels[controlplane.NEVER_READY_LABEL] = controlplane.NEVER_READY_VALUE
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": image}]}}


def create(kube: Cluster, namespace: str, kind: str, name: str, spec: dict[str, Any], app: str | None = None) -> None:
    group = {"CronJob": "batch/v1"}.get(kind, "apps/v1")
    body = {"apiVersion": group, "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": {"deployctl.dev/app": app or name}},
            "spec": spec}
    kube.request("POST", collection_path(kind, namespace), what=f"create {kind}", body=body)


def shop_repo(make_repo, namespace: str, apps: tuple[str, ...], word: str):
    repo = make_repo()
    shas = {app: sha(f"{app}-{word}") for app in apps}
    repo.commit({"deployctl.yaml": config({"staging": namespace}, {a: [] for a in apps}),
                 **deploy_files("staging", shas)}, message="deploy")
    return repo, shas


@pytest.fixture
def kube(cluster) -> Cluster:
    return Cluster(kubeconfig=cluster.kubeconfig)


@pytest.fixture(scope="module")
def extra_nodes(cluster):
    """Three more kwok nodes (four in all) for DaemonSets; deleted afterwards."""
    kube = Cluster(kubeconfig=cluster.kubeconfig)
    names = [f"kwok-ds-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    for name in names:
        kube.request("POST", "/api/v1/nodes", what="create node", body={
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "110000"},
                       "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "110000"}},
        })
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = 0
        for name in names:
            node = kube.request("GET", f"/api/v1/nodes/{name}", what="get node")
            ready += any(c.get("type") == "Ready" and c.get("status") == "True"
                         for c in node.get("status", {}).get("conditions") or [])
        if ready == len(names):
            break
        time.sleep(0.2)
    yield names
    for name in names:
        kube.request("DELETE", f"/api/v1/nodes/{name}", what="delete node")


def test_a_rollout_completes_through_watch_events_with_no_list_repeated_while_waiting(
        cluster, namespace, kube, make_repo):
    # minReadySeconds and one pod at a time: the rollout takes seconds, a poller would LIST many times
    for app in ("api", "web"):
        create(kube, namespace, "Deployment", app, {
            "replicas": 3, "minReadySeconds": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": pod_template(app, f"{IMAGE}/{app}:initial")})
    for app in ("api", "web"):
        cluster.wait_deployment_available(namespace, app)
    repo, shas = shop_repo(make_repo, namespace, ("api", "web"), "watch")
    result = reconcile_repo(cluster, repo, poll_interval=0.1)
    assert result.exit_code == 0, result.outcomes
    assert {o.result for o in result.outcomes} == {"succeeded"}
    for app in ("api", "web"):  # the wait really waited: every new pod is up when the reconcile returns
        status = kube.request("GET", f"{collection_path('Deployment', namespace)}/{app}", what="get")["status"]
        assert status["updatedReplicas"] == status["availableReplicas"] == status["replicas"] == 3, status
    # One LIST in the namespace in all (the observe step's, whose resourceVersion the watch starts from) and
    # one watch: a poller would LIST every 0.1 s for the seconds this rollout takes. Counted in this namespace
    # only: kube-controller-manager LISTs every kind in each namespace an earlier test deleted, and on a
    # loaded machine those deletions run late, into this reconcile.
    lists = cluster.audited(namespace, verb="list", resource="deployments")
    assert len(lists) == 1, [(e["userAgent"], e["requestURI"]) for e in lists]
    watches = cluster.audited(namespace, verb="watch", resource="deployments")
    assert watches and len(watches) == result.requests.get("WATCH"), watches
    assert result.requests.get("PATCH") == 2


def test_a_paused_deployment_fails_at_once_with_paused(cluster, namespace, kube, make_repo):
    create(kube, namespace, "Deployment", "api", {
        "replicas": 1, "paused": True, "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
        "template": pod_template("api", f"{IMAGE}/api:initial")})
    repo, _ = shop_repo(make_repo, namespace, ("api",), "paused")
    result = reconcile_repo(cluster, repo, timeout=60)
    (outcome,) = result.outcomes
    assert outcome.result == "failed" and "paused" in outcome.message, outcome
    assert "rollout resume deployment/api" in outcome.message
    assert "timed out" not in outcome.message  # judged paused at once, not waited out


@pytest.fixture(scope="module")
def uncached(tmp_path_factory):
    """A control plane of our own whose API server serves Deployment watches from etcd (no watch
    cache), so that compacting etcd makes an old resourceVersion answer 410 Gone; and which may be
    restarted without disturbing the other tests."""
    from tests.fixtures.cluster import LocalCluster, _skip_reason

    if _skip_reason():
        pytest.skip(_skip_reason())
    directory = tmp_path_factory.mktemp("uncached")
    state = controlplane.up(directory, extra_args={"kube-apiserver": ["--watch-cache-sizes=deployments.apps#0"]})
    try:
        yield LocalCluster(dir=directory, kubeconfig=state.kubeconfig, server=state.server), state
    finally:
        controlplane.down(directory)


def compact_etcd(state: controlplane.ClusterState) -> int:
    """Compact etcd at its current revision (what the API server does every 5 minutes)."""
    etcd = f"http://127.0.0.1:{state.ports['etcd']}"

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(etcd + path, data=json.dumps(body).encode(), method="POST")  # noqa: S310
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback etcd of this test
            return json.loads(resp.read())

    revision = int(post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
    post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
    return revision


def test_the_watch_survives_a_forced_410_gone(uncached):
    own, state = uncached
    kube = Cluster(kubeconfig=own.kubeconfig)
    namespace = f"gone-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    create(kube, namespace, "Deployment", "api", {  # no pods: its status settles at once
        "replicas": 0, "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
        "template": pod_template("api", f"{IMAGE}/api:initial")})
    informer = Informer(kube, namespace, "Deployment").start()
    try:
        # kube-controller-manager's last write to the Deployment is seen: no event may move the informer past
        # the compaction below
        _until(lambda: informer.watching and _settled(kube, namespace, "api", seen_by=informer), timeout=60)
        # other writes move etcd on; compaction then forgets the informer's resourceVersion
        # (two writes: a watch from resourceVersion N starts at N + 1, which must be compacted too)
        for n in range(2):
            kube.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", what="create configmap",
                         body={"metadata": {"name": f"bump-{n}"}, "data": {"a": "b"}})
        assert compact_etcd(state) > int(informer.resource_version) + 1
        informer.reconnect()  # the stream drops; resuming from the compacted resourceVersion is 410 Gone
        _until(lambda: informer.gone == 1, what=lambda: (informer.watches, informer.lists, informer.resource_version, str(informer.error)))
        _set_image(kube, namespace, "api", f"{IMAGE}/api:after-gone")
        _until(lambda: informer.items()["api"].images["api"] == f"{IMAGE}/api:after-gone")
        assert informer.lists == 2  # one re-list for the 410, then watching again
        create(kube, namespace, "Deployment", "web", {
            "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "template": pod_template("web", f"{IMAGE}/web:initial")})
        _until(lambda: "web" in informer.items())
        assert (informer.lists, informer.gone) == (2, 1)
    finally:
        informer.stop()


def test_a_reconnect_resumes_the_watch_without_a_list(cluster, namespace, kube):
    create(kube, namespace, "Deployment", "api", {
        "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
        "template": pod_template("api", f"{IMAGE}/api:initial")})
    informer = Informer(kube, namespace, "Deployment").start()
    try:
        _until(lambda: informer.watching)
        informer.reconnect()
        _until(lambda: informer.watches == 2 and informer.watching)
        _set_image(kube, namespace, "api", f"{IMAGE}/api:after-reconnect")
        _until(lambda: informer.items()["api"].images["api"] == f"{IMAGE}/api:after-reconnect")
        assert informer.lists == 1
    finally:
        informer.stop()


def test_the_watch_survives_a_restarted_api_server(uncached):
    own, _ = uncached
    kube = Cluster(kubeconfig=own.kubeconfig)
    namespace = f"restart-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    create(kube, namespace, "Deployment", "api", {
        "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "api"}},
        "template": pod_template("api", f"{IMAGE}/api:initial")})
    informer = Informer(kube, namespace, "Deployment").start()
    try:
        controlplane.restart_component(own.dir, "kube-apiserver")
        deadline = time.monotonic() + 90
        while True:  # the API server is back when it answers
            try:
                kube.request("GET", f"/api/v1/namespaces/{namespace}", what="get namespace")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        _set_image(kube, namespace, "api", f"{IMAGE}/api:after-restart", retry=True)
        _until(lambda: informer.items()["api"].images["api"] == f"{IMAGE}/api:after-restart", timeout=60)
        # the dropped stream was resumed from its resourceVersion: a LIST only if the server had forgotten it
        assert informer.resumed >= 1 and informer.watches >= 2
        assert informer.lists == 1 + informer.gone, (informer.lists, informer.gone)
    finally:
        informer.stop()


def test_daemonset_rollouts_give_kubectls_verdicts(cluster, namespace, kube, make_repo, extra_nodes):
    kubectl = build.binaries().path("kubectl")
    for app, strategy in (("agent", {"type": "RollingUpdate"}),
                          ("collector", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}})):
        create(kube, namespace, "DaemonSet", app, {
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}}, "updateStrategy": strategy,
            "template": pod_template(app, f"{IMAGE}/{app}:initial")})
    repo, shas = shop_repo(make_repo, namespace, ("agent", "collector"), "ds")
    result = reconcile_repo(cluster, repo, timeout=90)
    assert result.exit_code == 0, result.outcomes
    assert {o.app: o.result for o in result.outcomes} == {"agent": "succeeded", "collector": "succeeded"}
    for app in ("agent", "collector"):
        ds = kube.request("GET", f"{collection_path('DaemonSet', namespace)}/{app}", what="get ds")
        assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}/{app}:{shas[app]}"
        assert ds["status"]["desiredNumberScheduled"] >= 4  # every node runs one
        out = _kubectl(kubectl, cluster, namespace, "rollout", "status", f"daemonset/{app}", "--watch=false")
        assert f'daemon set "{app}" successfully rolled out' in out

    # a rollout whose new pods never become ready: kubectl keeps waiting, and so do we, until the timeout
    _set_template_label(kube, namespace, "DaemonSet", "agent")
    repo2, _ = shop_repo(make_repo, namespace, ("agent", "collector"), "ds-2")
    result = reconcile_repo(cluster, repo2, timeout=6, apps=("agent",))
    (outcome,) = result.outcomes
    out = _kubectl(kubectl, cluster, namespace, "rollout", "status", "daemonset/agent", "--watch=false")
    assert "Waiting for daemon set \"agent\" rollout to finish" in out
    assert outcome.result == "failed" and "timed out" in outcome.message, outcome


def test_an_ondelete_daemonset_fails_at_once_where_kubectl_refuses(cluster, namespace, kube, make_repo, extra_nodes):
    create(kube, namespace, "DaemonSet", "agent", {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "agent"}}, "updateStrategy": {"type": "OnDelete"},
        "template": pod_template("agent", f"{IMAGE}/agent:initial")})
    repo, _ = shop_repo(make_repo, namespace, ("agent",), "ondelete")
    result = reconcile_repo(cluster, repo, timeout=60)
    (outcome,) = result.outcomes
    assert outcome.result == "failed" and "OnDelete" in outcome.message, outcome
    assert "timed out" not in outcome.message  # judged at once, not waited out
    out = _kubectl(build.binaries().path("kubectl"), cluster, namespace, "rollout", "status", "daemonset/agent",
                   "--watch=false", check=False)
    assert "rollout status is only available for RollingUpdate strategy type" in out


def test_a_cronjob_gets_its_new_image_and_is_in_sync(cluster, namespace, kube, make_repo):
    create(kube, namespace, "CronJob", "report", {
        "schedule": "0 3 * * *", "suspend": True,
        "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "report", "image": f"{IMAGE}/report:initial"}]}}}}})
    repo, shas = shop_repo(make_repo, namespace, ("report",), "cron")
    result = reconcile_repo(cluster, repo)
    assert result.exit_code == 0, result.outcomes
    (outcome,) = result.outcomes
    assert outcome.result == "succeeded" and outcome.workloads == (f"{namespace}/cronjob/report",)
    cj = kube.request("GET", f"{collection_path('CronJob', namespace)}/report", what="get cronjob")
    container = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{IMAGE}/report:{shas['report']}"
    assert cj["metadata"]["annotations"]["deployctl.dev/commit"] == shas["report"]
    again = reconcile_repo(cluster, repo)
    assert [o.result for o in again.outcomes] == ["in-sync"] and again.requests.get("PATCH", 0) == 0


# -- helpers ------------------------------------------------------------------------------------


def _set_image(kube: Cluster, namespace: str, name: str, image: str, *, retry: bool = False) -> None:
    """What `kubectl set image` does: a strategic-merge patch of one container's image."""
    deadline = time.monotonic() + 60
    while True:
        try:
            kube.request("PATCH", f"{collection_path('Deployment', namespace)}/{name}", what="set image",
                         body={"spec": {"template": {"spec": {"containers": [{"name": name, "image": image}]}}}},
                         content_type="application/strategic-merge-patch+json")
            return
        except Exception:
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _set_template_label(kube: Cluster, namespace: str, kind: str, name: str) -> None:
    """Make the workload's future pods never become ready (kwok ignores them)."""
    kube.request("PATCH", f"{collection_path(kind, namespace)}/{name}", what="never ready",
                 body={"spec": {"template": {"metadata": {"labels": {
                     controlplane.NEVER_READY_LABEL: controlplane.NEVER_READY_VALUE}}}}},
                 content_type="application/strategic-merge-patch+json")


def _until(check: Any, *, timeout: float = 15.0, what: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except KeyError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not true after {timeout}s" + (f": {what()}" if what else ""))


def _settled(kube: Cluster, namespace: str, name: str, *, seen_by: Informer) -> bool:
    """The Deployment's rollout is complete by kube-controller-manager's own status (its last write),
    and ``seen_by`` has that version."""
    d = kube.request("GET", f"{collection_path('Deployment', namespace)}/{name}", what="get deployment")
    progressing = [c for c in d.get("status", {}).get("conditions") or [] if c.get("type") == "Progressing"]
    return (d["status"].get("observedGeneration") == d["metadata"]["generation"]
            and bool(progressing) and progressing[0].get("reason") == "NewReplicaSetAvailable"
            and int(seen_by.resource_version or 0) >= int(d["metadata"]["resourceVersion"]))


def _kubectl(kubectl: Any, cluster: Any, namespace: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run([str(kubectl), "--kubeconfig", cluster.kubeconfig, "-n", namespace, *args],
                          capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr
