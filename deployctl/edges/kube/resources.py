"""Where each managed workload kind lives in the Kubernetes API."""

from __future__ import annotations

RESOURCES = {  # kind -> (API group path, plural)
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
}
PLURAL = {kind: plural for kind, (_, plural) in RESOURCES.items()}


def collection_path(kind: str, namespace: str) -> str:
    group, plural = RESOURCES[kind]
    return f"{group}/namespaces/{namespace}/{plural}"
