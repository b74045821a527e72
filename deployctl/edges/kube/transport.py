"""HTTP to the Kubernetes API without the kubernetes client on the hot path.

Loading ``kubernetes`` imports every generated model (hundreds of modules); a no-op reconcile
needs one LIST. This module reads the kubeconfig (or the in-cluster service account) itself for
the common cases (certificates, tokens, basic auth) and speaks JSON over one urllib3 pool.
Anything it does not understand (exec plugins, auth providers, proxies) is handed to the
kubernetes client's loader, imported only then. Every request has a deadline; every response
body is size-bounded.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3

from deployctl.edges.kube.kubeconfig import kubeconfig_paths, merged_kubeconfig
from deployctl.errors import ClusterUnreachableError, KubeApiError, kube_error

MAX_BODY = 512 * 1024 * 1024  # a LIST of many thousand workloads is large, but not unbounded
MAX_EVENT = 16 * 1024 * 1024  # one watch event (one object)
MAX_KUBECONFIG = 1024 * 1024
_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


ClusterError = KubeApiError
"""The API server refused a request: the root of the Kubernetes errors by status (:mod:`deployctl.errors`)."""


class NeedsClientLoader(Exception):  # noqa: N818 - a signal inside this module
    """The kubeconfig uses a feature only the kubernetes client's loader implements."""


@dataclass
class Endpoint:
    """Where and how to reach one API server."""

    server: str
    ssl_context: ssl.SSLContext | None
    headers: dict[str, str] = field(default_factory=dict)
    token_file: Path | None = None  # re-read periodically (bound service-account tokens rotate)
    _token_read: float = 0.0

    def auth_headers(self) -> dict[str, str]:
        if self.token_file is not None and time.monotonic() - self._token_read > 60:
            token = self.token_file.read_text().strip()
            self.headers["Authorization"] = f"Bearer {token}"
            self._token_read = time.monotonic()
        return self.headers


def _read_bounded(path: Path) -> str:
    with path.open("rb") as fh:
        data = fh.read(MAX_KUBECONFIG + 1)
    if len(data) > MAX_KUBECONFIG:
        raise ClusterUnreachableError(f"{path}: larger than {MAX_KUBECONFIG} bytes; not a kubeconfig")
    return data.decode()


def _in_cluster() -> Endpoint | None:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token = _SA_DIR / "token"
    if not host or not port or not token.exists():
        return None
    host = f"[{host}]" if ":" in host else host
    ctx = ssl.create_default_context(cafile=str(_SA_DIR / "ca.crt"))
    return Endpoint(server=f"https://{host}:{port}", ssl_context=ctx, token_file=token)


def _named(entries: Any, name: str | None, what: str) -> Mapping[str, Any]:
    for entry in entries or ():
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return entry.get(what) or {}
    raise ValueError(f"no {what} named {name!r}")


def _from_kubeconfig(path: Path, context: str | None) -> Endpoint:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(_read_bounded(path), Loader=loader)  # noqa: S506 - a safe loader
    return _from_document(doc, path.parent, context)


def _from_document(doc: Any, base: Path, context: str | None) -> Endpoint:
    """The endpoint of ``context`` in one kubeconfig document (relative file paths against ``base``)."""
    if not isinstance(doc, Mapping):
        raise ValueError("not a kubeconfig (no mapping at the top)")
    name = context or doc.get("current-context")
    if not name:
        raise ValueError("no context given and no current-context set")
    ctx = _named(doc.get("contexts"), name, "context")
    cluster = _named(doc.get("clusters"), ctx.get("cluster"), "cluster")
    user = _named(doc.get("users"), ctx.get("user"), "user") if ctx.get("user") else {}
    if any(k in user for k in ("exec", "auth-provider")) or any(
            k in cluster for k in ("proxy-url", "tls-server-name")):
        raise NeedsClientLoader
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise ValueError(f"cluster {ctx.get('cluster')!r} has no https:// server")

    def file_of(key: str, holder: Mapping[str, Any]) -> Path | None:
        value = holder.get(key)
        return (base / str(value)) if value else None

    ssl_context: ssl.SSLContext | None = None
    if server.startswith("https://"):
        ca_data = cluster.get("certificate-authority-data")
        ca_file = file_of("certificate-authority", cluster)
        ssl_context = ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None,
            cadata=base64.b64decode(ca_data).decode() if ca_data else None,
        )
        if cluster.get("insecure-skip-tls-verify"):
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        cert_data, key_data = user.get("client-certificate-data"), user.get("client-key-data")
        cert_file, key_file = file_of("client-certificate", user), file_of("client-key", user)
        if cert_data or key_data:
            _load_cert_data(ssl_context, base64.b64decode(cert_data or ""), base64.b64decode(key_data or ""))
        elif cert_file:
            ssl_context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    headers: dict[str, str] = {}
    token_file = file_of("tokenFile", user)
    if user.get("token"):
        headers["Authorization"] = f"Bearer {user['token']}"
    elif user.get("username") and user.get("password"):
        basic = base64.b64encode(f"{user['username']}:{user['password']}".encode()).decode()
        headers["Authorization"] = f"Basic {basic}"
    return Endpoint(server=server.rstrip("/"), ssl_context=ssl_context, headers=headers,
                    token_file=token_file if not headers else None)


def _load_cert_data(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` reads files only: write the PEMs to a private directory, load, delete."""
    with tempfile.TemporaryDirectory(prefix="deployctl-tls-") as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        for p, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(str(cert_path), str(key_path) if key else None)


def _from_client_loader(kubeconfig: str | None, context: str | None) -> Endpoint:
    """The kubernetes client's loader (exec plugins, auth providers): slower, complete."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)  # type: ignore[no-untyped-call]
    ctx = ssl.create_default_context(cafile=configuration.ssl_ca_cert) if configuration.verify_ssl else (
        ssl._create_unverified_context())  # noqa: S323 - the kubeconfig asked for it
    if configuration.cert_file:
        ctx.load_cert_chain(configuration.cert_file, configuration.key_file)
    headers = {}
    auth = (configuration.api_key or {}).get("authorization")
    if auth:
        headers["Authorization"] = str(auth)
    return Endpoint(server=str(configuration.host).rstrip("/"), ssl_context=ctx, headers=headers)


def load_endpoint(kubeconfig: str | None, context: str | None) -> Endpoint:
    """The API server and credentials of ``kubeconfig``/``context``; in-cluster when neither is
    given and a service account is mounted; else ``$KUBECONFIG`` or ``~/.kube/config``."""
    try:
        if kubeconfig is None and context is None:
            found = _in_cluster()
            if found is not None:
                return found
        paths = kubeconfig_paths(kubeconfig)
        try:
            if len(paths) == 1:
                return _from_kubeconfig(paths[0], context)
            # several files, merged as kubectl merges them (first file wins per name; paths made absolute)
            return _from_document(merged_kubeconfig(kubeconfig), Path("/"), context)
        except NeedsClientLoader:
            return _from_client_loader(os.pathsep.join(str(p) for p in paths), context)
    except ClusterUnreachableError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed kubeconfig is one clear error
        where = kubeconfig or "the default kubeconfig (KUBECONFIG or ~/.kube/config)"
        ctx_text = f" context {context!r}" if context else ""
        raise ClusterUnreachableError(f"cannot load {where}{ctx_text}: {type(exc).__name__}: {exc}") from exc


class Transport:
    """JSON requests and watch streams to one API server over one connection pool."""

    def __init__(self, endpoint: Endpoint, *, pool_size: int = 32, timeout: float = 15.0) -> None:
        self.endpoint = endpoint
        self.server = endpoint.server
        self.timeout = timeout
        kw: dict[str, Any] = {"ssl_context": endpoint.ssl_context} if endpoint.ssl_context else {}
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=pool_size, block=False, retries=False, **kw)
        self.requests: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, verb: str, path: str = "") -> None:
        # Lease requests (the environment lock, leader election) are counted apart from the workload API's,
        # so that "zero writes" still means no workload was touched.
        if "/apis/coordination.k8s.io/" in path:
            verb = f"lease {verb}"
        with self._lock:
            self.requests[verb] = self.requests.get(verb, 0) + 1

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        return self.server + path + (f"?{urlencode(query)}" if query else "")

    def request(self, method: str, path: str, *, what: str, query: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: float | None = None) -> dict[str, Any]:
        """One request; the decoded JSON answer. Errors: :class:`ClusterError` (refused),
        :class:`ClusterUnreachableError` (no answer)."""
        self._count(method.upper(), path)
        headers = {"Accept": "application/json", **self.endpoint.auth_headers()}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = content_type
        try:
            resp = self.pool.request(method, self.url(path, query), body=data, headers=headers,
                                     timeout=urllib3.Timeout(total=timeout or self.timeout),
                                     preload_content=False, redirect=False)
            try:
                raw = resp.read(MAX_BODY + 1)
            finally:
                resp.release_conn()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachableError(
                f"cannot reach the Kubernetes API at {self.server} ({what}): {type(exc).__name__}: {exc}"
            ) from exc
        if len(raw) > MAX_BODY:
            raise ClusterError(f"{what}: the answer is larger than {MAX_BODY} bytes")
        if resp.status >= 400:
            raise kube_error(f"{what}: {resp.status} {_status_message(raw, resp.reason)}", status=resp.status)
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise ClusterError(f"{what}: the API server sent a response that is not JSON ({exc})") from exc
        return answer if isinstance(answer, dict) else {}

    def stream(self, path: str, *, what: str, query: Mapping[str, Any], timeout: float,
               on_open: Any = None) -> Iterator[dict[str, Any]]:
        """The events of one watch request, decoded, until the server ends it (``timeoutSeconds``)
        or ``timeout`` seconds of silence. ``on_open`` receives the response (to shut it down)."""
        self._count("WATCH", path)
        headers = {"Accept": "application/json", **self.endpoint.auth_headers()}
        try:
            resp = self.pool.request("GET", self.url(path, query), headers=headers, preload_content=False,
                                     timeout=urllib3.Timeout(connect=self.timeout, read=timeout), redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachableError(f"cannot reach the Kubernetes API at {self.server} ({what}): "
                                          f"{type(exc).__name__}: {exc}") from exc
        if on_open is not None:
            on_open(resp)
        try:
            if resp.status >= 400:
                raw = resp.read(MAX_EVENT)
                raise kube_error(f"{what}: {resp.status} {_status_message(raw, resp.reason)}", status=resp.status)
            buf = b""
            try:
                for chunk in resp.stream(64 * 1024, decode_content=True):
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            yield _event(line, what)
                    if len(buf) > MAX_EVENT:
                        raise ClusterError(f"{what}: one watch event is larger than {MAX_EVENT} bytes")
            except (urllib3.exceptions.HTTPError, OSError, AttributeError, ValueError) as exc:
                raise ClusterUnreachableError(f"the watch stream from {self.server} dropped ({what}): "
                                              f"{type(exc).__name__}: {exc}") from exc
            if buf.strip():
                yield _event(buf, what)
        finally:
            resp.release_conn()


def _event(line: bytes, what: str) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ClusterError(f"{what}: a watch event is not JSON ({exc})") from exc
    if not isinstance(event, dict):
        raise ClusterError(f"{what}: a watch event is not an object")
    return event


def _status_message(raw: bytes, reason: str | None) -> str:
    try:
        body = orjson.loads(raw or b"{}")
        return str(body.get("message") or reason) if isinstance(body, dict) else str(reason)
    except orjson.JSONDecodeError:
        return str(reason)
