"""The README's existing-cluster quickstart, run as written against the local control plane."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deployctl.devtools.localcluster import build

# the kubectl that `localcluster build` builds beside the control plane (what `localcluster env` puts on PATH)
KUBECTL_DIR = build.binaries().bin_dir
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (KUBECTL_DIR / "kubectl").exists() and shutil.which("kubectl") is None,
                                 reason="the quickstart labels with kubectl (make controlplane builds it)")]

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart() -> str:
    block = README.read_text(encoding="utf-8").split("<!-- quickstart -->", 1)[1].split("<!-- /quickstart -->")[0]
    return block.strip().removeprefix("```bash").removesuffix("```")


def test_the_readme_quickstart_works_as_written(cluster, namespace, tmp_path: Path) -> None:
    cluster.deployment(namespace, "checkout", app="")  # running, not yet opted in
    script = quickstart()
    assert "export NS=shop-staging" in script
    script = script.replace("export NS=shop-staging", f"export NS={namespace}", 1)  # this test's namespace
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig,
           "PATH": os.pathsep.join((str(Path(sys.executable).parent), str(KUBECTL_DIR), os.environ.get("PATH", ""))),
           "GIT_AUTHOR_NAME": "Ana", "GIT_AUTHOR_EMAIL": "ana@example.com", "GIT_COMMITTER_NAME": "Ana",
           "GIT_COMMITTER_EMAIL": "ana@example.com"}
    env.pop("DEPLOYCTL_ALLOW_NAMESPACES", None)
    result = subprocess.run(["bash", "--norc", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    labels = cluster.read_deployment(namespace, "checkout").metadata.labels
    assert labels["deployctl.dev/app"] == "checkout"
    plan_line = next(line for line in result.stdout.splitlines() if line.startswith("staging"))
    assert plan_line.split()[:3] == ["staging", "checkout", "update"]
    assert "ok: 1 target in 1 environment at the work tree" in result.stdout
    assert (tmp_path / ".github" / "workflows" / "deployctl.yml").is_file()
