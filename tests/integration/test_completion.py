"""Shell completion evaluated in a real bash: the script installs, and env/app names, refs and
kubeconfig contexts complete from the repo and the kubeconfig."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from tests.fixtures.gitrepo import GitRepo

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")]

CONFIG = """version: 1
apps:
  web: {image: registry.example.com/shop/web}
  worker: {image: registry.example.com/shop/worker}
  api: {image: registry.example.com/shop/api}
environments:
  staging: {namespace: shop-staging}
  production: {namespace: shop}
"""
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: []
users: []
contexts:
  - {name: prod-eu, context: {cluster: a, user: b}}
  - {name: prod-us, context: {cluster: a, user: b}}
  - {name: dev, context: {cluster: a, user: b}}
"""


def complete(words: list[str]) -> list[str]:
    """What bash offers after ``words`` (the last one is being typed), via the installed script."""
    script = (
        'eval "$(deployctl completion bash)"\n'
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_deployctl_completion deployctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, env=env, timeout=60,
                            check=True)
    return [line for line in result.stdout.splitlines() if line]


@pytest.fixture
def repo(deploy_repo: GitRepo) -> str:
    deploy_repo.commit({"deployctl.yaml": CONFIG}, message="config")
    deploy_repo.tag("v1", deploy_repo.head)
    return str(deploy_repo.path)


def test_the_bash_script_registers_a_completion_for_deployctl() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(["bash", "--norc", "-c", 'eval "$(deployctl completion bash)"; complete -p deployctl'],
                         capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    assert out.strip() == "complete -o nosort -F _deployctl_completion deployctl"


def test_commands_envs_apps_refs_and_contexts_complete(repo: str, tmp_path: Path) -> None:
    assert complete(["deployctl", "sta"]) == ["status"]
    assert complete(["deployctl", "plan", "--repo", repo, "--env", ""]) == ["production", "staging"]
    assert complete(["deployctl", "status", "--repo", repo, "--app", "w"]) == ["web", "worker"]
    assert complete(["deployctl", "plan", "--repo", repo, "--env", "staging,p"]) == ["staging,production"]
    assert set(complete(["deployctl", "plan", "--repo", repo, "--ref", ""])) >= {"HEAD", "main", "v1"}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    assert complete(["deployctl", "plan", "--kubeconfig", str(kubeconfig), "--context", "prod"]) == \
        ["prod-eu", "prod-us"]
    assert complete(["deployctl", "plan", "-o", ""]) == ["table", "json", "yaml"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_are_printed(shell: str) -> None:
    result = CliRunner().invoke(main, ["completion", shell])
    assert result.exit_code == 0 and "_DEPLOYCTL_COMPLETE" in result.output
