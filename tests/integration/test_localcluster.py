"""The local control plane really runs Deployments: rollouts complete, and fail when told to."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.devtools.localcluster import build, controlplane

pytestmark = pytest.mark.integration


def test_version_endpoint_reports_the_pinned_release(cluster):
    from kubernetes import client

    from deployctl.devtools.localcluster import pins

    with cluster.api() as api:
        assert client.VersionApi(api).get_code().git_version == pins.KUBERNETES


def test_image_patch_rolls_out_and_scales_the_old_replicaset_to_zero(cluster, namespace):
    from kubernetes import client

    cluster.deployment(namespace, "web", image="registry.example.com/shop/web:one", replicas=2)
    cluster.wait_deployment_available(namespace, "web")
    with cluster.api() as api:
        apps = client.AppsV1Api(api)
        apps.patch_namespaced_deployment(
            "web", namespace, {"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "registry.example.com/shop/web:two"}]}}}}
        )
        d = cluster.wait_deployment_available(namespace, "web")
        assert d.status.updated_replicas == d.status.available_replicas == d.spec.replicas == 2
        replicasets = apps.list_namespaced_replica_set(namespace).items
        by_image = {rs.spec.template.spec.containers[0].image: rs for rs in replicasets}
        assert by_image["registry.example.com/shop/web:one"].status.replicas == 0
        assert by_image["registry.example.com/shop/web:two"].status.ready_replicas == 2


def test_never_ready_pods_end_in_progress_deadline_exceeded(cluster, namespace):
    cluster.deployment(namespace, "broken", progress_deadline=3, never_ready=True)
    deadline = time.monotonic() + 60
    reasons: list[str] = []
    while time.monotonic() < deadline:
        status = cluster.read_deployment(namespace, "broken").status
        reasons = [c.reason for c in status.conditions or []]
        if "ProgressDeadlineExceeded" in reasons:
            break
        time.sleep(0.5)
    assert "ProgressDeadlineExceeded" in reasons
    assert not status.available_replicas


def test_up_down_cli_starts_and_stops_only_its_own_processes(tmp_path):
    from tests.fixtures.cluster import _skip_reason

    if _skip_reason():
        pytest.skip(_skip_reason())
    runner = CliRunner()
    result = runner.invoke(main, ["localcluster", "up", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    kubeconfig = result.stdout.strip().splitlines()[0]
    assert kubeconfig == str(tmp_path / "kubeconfig")
    state = controlplane.read_state(tmp_path)
    assert state is not None and set(state.pids) == set(controlplane.COMPONENTS)
    for name in controlplane.COMPONENTS:
        assert (tmp_path / "logs" / f"{name}.log").exists()

    env = runner.invoke(main, ["localcluster", "env", "--dir", str(tmp_path)])
    lines = env.stdout.strip().splitlines()
    assert lines[0] == f"export KUBECONFIG={kubeconfig}"
    # kubectl of the same pinned release is first on PATH after eval, and talks to this cluster
    bin_dir = build.binaries().bin_dir
    assert lines[1] == f'export PATH={bin_dir}:"$PATH"'
    shell = subprocess.run(["bash", "-c", env.stdout + "\ncommand -v kubectl; kubectl get nodes -o name"],
                           capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.splitlines() == [str(bin_dir / "kubectl"), f"node/{controlplane.FAKE_NODE}"]

    down = runner.invoke(main, ["localcluster", "down", "--dir", str(tmp_path)])
    assert down.exit_code == 0
    for name, pid in state.pids.items():
        assert not controlplane._pid_runs(pid, state.binaries[name]), f"{name} still runs"
    with pytest.raises(OSError):
        urllib.request.urlopen(state.server.replace("https", "http") + "/healthz", timeout=1)


def test_env_without_a_running_cluster_says_how_to_start_one(tmp_path):
    result = CliRunner().invoke(main, ["localcluster", "env", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no local cluster runs in" in result.output and "deployctl localcluster up" in result.output
