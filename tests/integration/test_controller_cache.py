"""The controller's workload cache: a hand-made image change is corrected from the watch, at once,
without a new commit and without waiting for the interval."""

from __future__ import annotations

import pytest

from deployctl.edges.audit.url import open_store
from deployctl.edges.kube.cluster import Cluster, collection_path
from tests.integration.test_controller import IMAGE, Watch, audit_url, image_of, sha, wait_for
from tests.integration.test_controller import bare as bare  # noqa: F401 - the fixture
from tests.integration.test_controller import watches as watches  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def test_a_kubectl_set_image_drift_is_corrected_from_the_watch_with_no_new_commit(
        cluster, namespace, bare, tmp_path, watches):  # noqa: F811
    w = Watch(tmp_path, bare.path, kubeconfig=cluster.kubeconfig, audit=audit_url(tmp_path), interval="1h")
    watches.append(w)
    w.wait_ready(timeout=60)  # the first reconcile (and its rollout) is over
    desired = f"{IMAGE}/api:{sha('api-1')}"
    assert image_of(cluster, namespace) == desired
    reconciles = w.metric("deployctl_reconciles_total")

    # what `kubectl set image deployment/api api=...` sends: a strategic-merge patch of the image
    Cluster(kubeconfig=cluster.kubeconfig).request(
        "PATCH", f"{collection_path('Deployment', namespace)}/api", what="set image",
        body={"spec": {"template": {"spec": {"containers": [{"name": "api", "image": f"{IMAGE}/api:by-hand"}]}}}},
        content_type="application/strategic-merge-patch+json")
    # The interval is an hour and no webhook is sent: only the watch can start the run that puts it back
    # (how soon: bench/latency.py).
    wait_for("the drift corrected", lambda: image_of(cluster, namespace) == desired, timeout=60)

    def corrected():
        records = open_store(audit_url(tmp_path)).query(app="api")
        return records[0] if records and records[0].result not in ("started", "succeeded") else None
    record = wait_for("the correction on record", corrected, timeout=30)
    assert (record.result, record.attempt.trigger, record.attempt.new_sha) == ("drift-corrected", "drift", sha("api-1"))
    assert len({r.attempt.deploy_commit for r in open_store(audit_url(tmp_path)).query(app="api")}) == 1  # no new commit
    # the outcome is on record before the run returns (and releases the environment lock): wait for the count
    wait_for("the run counted", lambda: w.metric("deployctl_reconciles_total") == reconciles + 1, timeout=10)
