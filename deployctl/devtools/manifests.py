"""Workload manifests for the local cluster: one builder for the tests, the demo and the benchmarks."""

from __future__ import annotations

from typing import Any

APP_LABEL = "deployctl.dev/app"
NAME_LABEL = "app.kubernetes.io/name"


def deployment(
    namespace: str,
    name: str,
    *,
    app: str | None = None,
    container: str | None = None,
    image: str,
    replicas: int = 1,
    progress_deadline: int | None = None,
    never_ready: bool = False,
) -> dict[str, Any]:
    """A Deployment labelled ``deployctl.dev/app=<app>`` (``app=""``: unlabelled, so deployctl leaves it alone).

    ``never_ready`` makes kwok keep its pods Pending with a simulated image pull error (a rollout that fails).
    """
    meta_labels: dict[str, str] = {}
    if app != "":
        meta_labels[APP_LABEL] = app or name
    pod_labels = {NAME_LABEL: name}
    if never_ready:
        pod_labels["deployctl.dev/simulate"] = "never-ready"
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {NAME_LABEL: name}},
        "template": {
            "metadata": {"labels": pod_labels},
            "spec": {"containers": [{"name": container or name, "image": image}]},
        },
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "spec": spec,
    }
