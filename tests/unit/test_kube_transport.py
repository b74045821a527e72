"""Reading a kubeconfig without the kubernetes client: the common credentials, and clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deployctl.edges.kube.transport import load_endpoint
from deployctl.errors import ClusterUnreachableError


def kubeconfig(tmp_path: Path, user: dict[str, object], *, server: str = "http://127.0.0.1:1") -> str:
    path = tmp_path / "config"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
    }))
    return str(path)


def test_a_bearer_token_becomes_the_authorization_header(tmp_path):
    endpoint = load_endpoint(kubeconfig(tmp_path, {"token": "abc"}), None)
    assert endpoint.server == "http://127.0.0.1:1" and endpoint.auth_headers() == {"Authorization": "Bearer abc"}


def test_a_token_file_is_read_relative_to_the_kubeconfig(tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    endpoint = load_endpoint(kubeconfig(tmp_path, {"tokenFile": "token"}), None)
    assert endpoint.auth_headers() == {"Authorization": "Bearer from-file"}


def test_an_unknown_context_is_one_clear_error_naming_the_file(tmp_path):
    path = kubeconfig(tmp_path, {"token": "abc"})
    with pytest.raises(ClusterUnreachableError, match=r"cannot load .*config context 'prod'.*no context named 'prod'"):
        load_endpoint(path, "prod")


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "config"
    path.write_bytes(b"a" * (2 * 1024 * 1024))
    with pytest.raises(ClusterUnreachableError, match="not a kubeconfig"):
        load_endpoint(str(path), None)


def test_the_common_case_does_not_import_the_kubernetes_client(tmp_path):
    import subprocess

    code = (f"import sys; from deployctl.edges.kube.transport import load_endpoint; "
            f"load_endpoint({kubeconfig(tmp_path, {'token': 'abc'})!r}, None); print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
