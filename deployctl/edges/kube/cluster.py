"""The Kubernetes edge: observe labelled workloads, patch images, read pod failure reasons.

This is one of the two modules allowed to import the kubernetes client (see ``.importlinter``).
It speaks raw JSON (``_preload_content=False``) to avoid the client's slow model conversion,
counts every request by verb, and turns connection failures into
:class:`~deployctl.errors.ClusterUnreachableError`.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from deployctl.errors import ClusterUnreachableError, DeployctlError
from deployctl.model.workload import APP_LABEL, Workload

log = structlog.get_logger(__name__)

FIELD_MANAGER = "deployctl"
_PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


class ClusterError(DeployctlError):
    """The API server refused a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024
_SECTIONS = ("clusters", "contexts", "users")
_FILE_KEYS = {"cluster": ("certificate-authority",), "user": ("client-certificate", "client-key", "tokenFile")}


def kubeconfig_paths(value: str | None) -> list[Path]:
    """The files of a KUBECONFIG value (os.pathsep-separated; empty parts ignored), else ~/.kube/config."""
    value = value if value is not None else os.environ.get("KUBECONFIG")
    parts = [p for p in (value or "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in parts] or [Path("~/.kube/config").expanduser()]


def merged_kubeconfig(value: str | None) -> dict[str, Any]:
    """Every file of a KUBECONFIG value merged the way kubectl merges them: the first file that names a
    cluster, context or user wins; the first ``current-context`` wins; a file that does not exist is skipped;
    relative certificate paths are resolved against the file that holds them."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", **{s: [] for s in _SECTIONS}}
    seen: dict[str, set[str]] = {s: set() for s in _SECTIONS}
    found = False
    for path in kubeconfig_paths(value):
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KUBECONFIG_BYTES + 1)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ClusterUnreachableError(f"cannot read kubeconfig {path}: {exc}") from exc
        if len(data) > MAX_KUBECONFIG_BYTES:
            raise ClusterUnreachableError(f"kubeconfig {path} is larger than {MAX_KUBECONFIG_BYTES} bytes")
        try:
            doc = yaml.safe_load(data) or {}
        except yaml.YAMLError as exc:
            raise ClusterUnreachableError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise ClusterUnreachableError(f"kubeconfig {path} is not a mapping")
        found = True
        if doc.get("current-context") and not merged.get("current-context"):
            merged["current-context"] = doc["current-context"]
        for section in _SECTIONS:
            for item in doc.get(section) or []:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    raise ClusterUnreachableError(f"kubeconfig {path}: an entry of {section} has no name")
                if item["name"] in seen[section]:
                    continue
                seen[section].add(item["name"])
                merged[section].append(_absolute_paths(item, section[:-1], path.parent))
    if not found:
        raise ClusterUnreachableError(
            "no kubeconfig found (" + ", ".join(str(p) for p in kubeconfig_paths(value)) + ")")
    return merged


def _absolute_paths(item: dict[str, Any], kind: str, base: Path) -> dict[str, Any]:
    body = item.get(kind)
    if not isinstance(body, dict):
        return item
    body = dict(body)
    for key in _FILE_KEYS.get(kind, ()):
        value = body.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            body[key] = str(base / value)
    return {**item, kind: body}


def current_context(kubeconfig: str | None) -> str | None:
    """The current context of the merged kubeconfig (None in a pod without one)."""
    try:
        return merged_kubeconfig(kubeconfig).get("current-context") or None
    except ClusterUnreachableError:
        return None


@dataclass(frozen=True)
class PodProblem:
    pod: str
    reason: str


class Cluster:
    """A connection to one cluster (one kubeconfig context)."""

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_client: client.ApiClient | None = None,
        pool_size: int = 32,
        timeout: float = 15.0,
    ) -> None:
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.timeout = timeout
        self.context = context
        if api_client is None:
            configuration = client.Configuration()
            try:
                in_cluster = False
                if kubeconfig is None and context is None:
                    try:
                        config.load_incluster_config(client_configuration=configuration)
                        in_cluster = True
                    except ConfigException:
                        pass
                if not in_cluster:
                    config.load_kube_config_from_dict(
                        merged_kubeconfig(kubeconfig), context=context, client_configuration=configuration,
                        persist_config=False,
                    )
            except (ConfigException, OSError, TypeError, ValueError, KeyError) as exc:
                where = kubeconfig or "the default kubeconfig (KUBECONFIG or ~/.kube/config)"
                ctx = f" context {context!r}" if context else ""
                raise ClusterUnreachableError(f"cannot load {where}{ctx}: {exc}") from exc
            configuration.connection_pool_maxsize = pool_size
            configuration.retries = False
            api_client = client.ApiClient(configuration)
        self.server = str(api_client.configuration.host)
        original = api_client.call_api

        def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            # Lease requests (the environment lock) are counted apart from the workload API's, so that
            # "zero writes" still means no workload was touched.
            verb = f"lease {method.upper()}" if "/apis/coordination.k8s.io/" in url else method.upper()
            with self._lock:
                self.requests[verb] += 1
            if kwargs.get("_request_timeout") is None:
                kwargs["_request_timeout"] = self.timeout
            return original(method, url, *args, **kwargs)

        api_client.call_api = counted  # type: ignore[method-assign]
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    # -- errors -------------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            resp = fn(*args, _preload_content=False, **kwargs)
            return orjson.loads(resp.data) if resp.data else {}
        except ApiException as exc:
            reason = _api_message(exc)
            raise ClusterError(f"{what}: {exc.status} {reason}", status=exc.status) from exc
        except orjson.JSONDecodeError as exc:
            raise ClusterError(f"{what}: the API server sent a response that is not JSON ({exc})") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachableError(
                f"cannot reach the Kubernetes API at {self.server} ({what}): {type(exc).__name__}: {exc}"
            ) from exc

    # -- observe ------------------------------------------------------------------------------

    def list_workloads(self, namespace: str, *, app_selector: str = APP_LABEL) -> list[Workload]:
        """Every labelled Deployment and StatefulSet in ``namespace``: one LIST per kind."""
        return [w for kind in _PLURAL for w in self.list_kind(namespace, kind, app_selector=app_selector)]

    def list_kind(self, namespace: str, kind: str, *, app_selector: str = APP_LABEL) -> list[Workload]:
        """The labelled workloads of one kind in ``namespace``: one LIST."""
        fn = self.apps.list_namespaced_deployment if kind == "Deployment" else self.apps.list_namespaced_stateful_set
        body = self._call(f"list {_PLURAL[kind]} in {namespace}", fn, namespace, label_selector=app_selector)
        return [Workload.from_object(item, kind) for item in body.get("items", [])]

    def get_workload(self, kind: str, namespace: str, name: str) -> Workload:
        fn = self.apps.read_namespaced_deployment if kind == "Deployment" else self.apps.read_namespaced_stateful_set
        return Workload.from_object(self._call(f"get {kind} {namespace}/{name}", fn, name, namespace), kind)

    def namespace_exists(self, namespace: str) -> bool:
        try:
            self._call(f"get namespace {namespace}", self.core.read_namespace, namespace)
        except ClusterError as exc:
            if exc.status in (403, 404):
                return False
            raise
        return True

    def pod_problems(self, workload: Workload, *, limit: int = 3) -> list[PodProblem]:
        """Why a workload's pods are not ready: waiting reasons, failed conditions, or phase."""
        if not workload.selector:
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(workload.selector.items()))
        body = self._call(
            f"list pods of {workload.ref}", self.core.list_namespaced_pod, workload.namespace, label_selector=selector
        )
        problems: list[PodProblem] = []
        for pod in body.get("items", []):
            reason = _pod_reason(pod)
            if reason:
                problems.append(PodProblem(pod["metadata"]["name"], reason))
        problems.sort(key=lambda p: p.pod, reverse=True)
        return problems[:limit]

    # -- act ----------------------------------------------------------------------------------

    def apply_image(
        self, workload: Workload, *, container: str, image: str, annotations: Mapping[str, str]
    ) -> Workload:
        """Server-side apply of one container image and deployctl's annotations, as field manager ``deployctl``."""
        body = {
            "apiVersion": "apps/v1",
            "kind": workload.kind,
            "metadata": {"name": workload.name, "namespace": workload.namespace, "annotations": dict(annotations)},
            "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
        }
        fn = (
            self.apps.patch_namespaced_deployment
            if workload.kind == "Deployment"
            else self.apps.patch_namespaced_stateful_set
        )
        result = self._call(
            f"apply {workload.ref} in {workload.namespace}",
            fn,
            workload.name,
            workload.namespace,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        return Workload.from_object(result, workload.kind)

    def annotate(self, workload: Workload, annotations: Mapping[str, str | None]) -> Workload:
        """Set (or, with None, remove) annotations on one workload with a JSON merge patch."""
        fn = (
            self.apps.patch_namespaced_deployment
            if workload.kind == "Deployment"
            else self.apps.patch_namespaced_stateful_set
        )
        body = {"metadata": {"annotations": dict(annotations)}}
        result = self._call(f"annotate {workload.ref} in {workload.namespace}", fn, workload.name,
                            workload.namespace, body, field_manager=FIELD_MANAGER,
                            _content_type="application/merge-patch+json")
        return Workload.from_object(result, workload.kind)

    def ensure_namespace(self, name: str) -> None:
        """Create a namespace unless it exists (for the demo and benchmarks, not for reconcile)."""
        try:
            self._call(f"create namespace {name}", self.core.create_namespace, {"metadata": {"name": name}})
        except ClusterError as exc:
            if exc.status != 409:
                raise

    def create_deployment(self, body: Mapping[str, Any]) -> None:
        """Create a Deployment unless it exists (for the demo and benchmarks, not for reconcile)."""
        meta = body["metadata"]
        try:
            self._call(f"create deployment {meta['namespace']}/{meta['name']}",
                       self.apps.create_namespaced_deployment, meta["namespace"], dict(body))
        except ClusterError as exc:
            if exc.status != 409:
                raise


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(exc.reason)


def _pod_reason(pod: Mapping[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            msg = waiting.get("message") or ""
            return f"{waiting['reason']}{': ' + msg if msg else ''}"
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated and terminated.get("reason"):
            return f"container {cs.get('name')} terminated: {terminated['reason']}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return None
    for cond in status.get("conditions") or []:
        if cond.get("status") == "False" and cond.get("reason"):
            return f"{cond['type']}={cond['reason']}: {cond.get('message', '')}".strip(": ")
    phase = status.get("phase") or "Unknown"
    return f"pod not ready (phase {phase})"
