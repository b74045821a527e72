"""What a fresh local control plane is given before use: the admin kubeconfig, a bootstrap HTTPS client
and kwok's fake node."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from deployctl.devtools.localcluster import pki
from deployctl.errors import LocalClusterError

FAKE_NODE = "kwok-node-0"


def write_kubeconfig(path: Path, server: str, keys: pki.Pki) -> None:
    """The admin kubeconfig of the local control plane (certificates inline, mode 0600)."""
    import base64

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": b64(keys.ca_crt)}}],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64(keys.admin_crt), "client-key-data": b64(keys.admin_key)},
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    path.chmod(0o600)


class Api:
    """A minimal HTTPS client for bootstrapping (avoids importing the kubernetes client at startup)."""

    def __init__(self, server: str, keys: pki.Pki) -> None:
        self.server = server
        self.context = ssl.create_default_context(cafile=str(keys.ca_crt))
        self.context.load_cert_chain(str(keys.admin_crt), str(keys.admin_key))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310 - https only
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=5) as resp:  # noqa: S310
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def create_fake_node(api: Api) -> None:
    """The one kwok node every pod is scheduled on (idempotent)."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": FAKE_NODE,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": FAKE_NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
            },
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "110000"},
            "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "110000"},
        },
    }
    code, body = api.request("POST", "/api/v1/nodes", node)
    if code not in (201, 409):
        raise LocalClusterError(f"cannot create the fake node: HTTP {code}: {body}")


def node_ready(api: Api) -> bool:
    """kwok has taken the fake node over (it reports Ready)."""
    code, body = api.request("GET", f"/api/v1/nodes/{FAKE_NODE}")
    if code != 200 or not isinstance(body, dict):
        return False
    conditions = body.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
