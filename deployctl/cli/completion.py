"""`deployctl completion bash|zsh|fish`, and the completers that read names from the repo and kubeconfig."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from click.shell_completion import CompletionItem, get_completion_class

from deployctl import settings
from deployctl.cli.output import names_option

F = TypeVar("F", bound=Callable[..., Any])
SHELLS = ("bash", "zsh", "fish")
_MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024


def _repo(ctx: click.Context) -> str:
    value = ctx.params.get("repo")
    return value if isinstance(value, str) and value else "."


def _names(ctx: click.Context, kind: str) -> list[str]:
    """Environment or app names of the repo: the work tree's, else HEAD's; nothing when it cannot be read."""
    from deployctl.edges.git.repo import read_desired_state
    from deployctl.errors import DeployctlError

    try:
        try:
            state = read_desired_state(_repo(ctx), worktree=True)
        except DeployctlError:
            state = read_desired_state(_repo(ctx), ref="HEAD")
    except DeployctlError:
        return []
    names = {t.env if kind == "env" else t.app for t in state.targets}
    if state.config is not None:
        names |= set(state.config.environments if kind == "env" else state.config.apps)
    return sorted(names)


def _complete(kind: str) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        done, _, last = incomplete.rpartition(",")  # --env staging,prod<TAB>
        prefix = f"{done}," if done else ""
        return [CompletionItem(prefix + n) for n in _names(ctx, kind) if n.startswith(last)]

    return complete


complete_env = _complete("env")
complete_app = _complete("app")


def complete_ref(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from deployctl.edges.git.repo import reference_names
    from deployctl.errors import DeployctlError

    try:
        names = reference_names(_repo(ctx))
    except DeployctlError:
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def kubeconfig_contexts(path: str | None) -> list[str]:
    """Context names of a kubeconfig file (--kubeconfig, else the first of $KUBECONFIG, else ~/.kube/config)."""
    chosen = path or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or str(Path.home() / ".kube/config")
    try:
        with open(chosen, "rb") as handle:
            data = yaml.safe_load(handle.read(_MAX_KUBECONFIG_BYTES))
    except (OSError, yaml.YAMLError):
        return []
    contexts = data.get("contexts") if isinstance(data, dict) else None
    if not isinstance(contexts, list):
        return []
    return sorted({str(c["name"]) for c in contexts if isinstance(c, dict) and c.get("name")})


def complete_context(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    path = ctx.params.get("kubeconfig")
    return [CompletionItem(n) for n in kubeconfig_contexts(path if isinstance(path, str) else None)
            if n.startswith(incomplete)]


def env_option(f: F) -> F:
    return names_option("--env", "envs", metavar="ENV", help="Only this environment", complete=complete_env)(f)


def app_option(f: F) -> F:
    return names_option("--app", "apps", metavar="APP", help="Only this app", complete=complete_app)(f)


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    Commands, options, environment and app names (from the repo), refs and kubeconfig
    contexts complete.

    \b
    Examples:
      eval "$(deployctl completion bash)"                 # in ~/.bashrc
      deployctl completion zsh > "${fpath[1]}/_deployctl"
      deployctl completion fish > ~/.config/fish/completions/deployctl.fish
    """
    from deployctl.cli import main

    cls = get_completion_class(shell)
    assert cls is not None
    script = cls(main, {}, "deployctl", settings.COMPLETE.name).source()
    click.echo(script)
