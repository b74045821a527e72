"""`deployctl localcluster`: a real local Kubernetes control plane for trying deployctl, the demo and tests."""

from __future__ import annotations

import time
from pathlib import Path

import click

from deployctl.cli.output import JSON, TABLE, YAML, Output, duration_option, output_options, render_table
from deployctl.devtools.localcluster import build, controlplane

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where certificates, the kubeconfig, etcd data and component logs go "
    "[default: ~/.cache/deployctl/devtools/localcluster].",
)


@click.group()
def localcluster() -> None:
    """Run a local control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok.

    The binaries (and a kubectl of the same release) are built once from pinned Go modules
    (needs the Go toolchain) and cached in
    ~/.cache/deployctl/controlplane. kwok fakes a node, so Deployments really roll out.
    Pods labelled deployctl.dev/simulate=never-ready never become Ready (to rehearse failures).

    \b
    Example:
      deployctl localcluster up --dir /tmp/cluster
      eval "$(deployctl localcluster env --dir /tmp/cluster)"
      deployctl localcluster down --dir /tmp/cluster
    """


@localcluster.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if the cached binaries exist.")
def build_cmd(force: bool) -> None:
    """Build (or reuse) the pinned control-plane binaries and print where they are."""
    started = time.monotonic()
    bins = build.build(force=force)
    click.echo(f"{bins.bin_dir} ({time.monotonic() - started:.1f}s)")


@localcluster.command()
@_dir_option
@duration_option("--timeout", default="90s", help="How long to wait for the cluster to be usable")
@click.option("--no-build", is_flag=True, help="Fail instead of building missing binaries.")
def up(directory: Path | None, timeout: float, no_build: bool) -> None:
    """Start the control plane on 127.0.0.1 and print the admin kubeconfig path."""
    started = time.monotonic()
    state = controlplane.up(directory, build_if_missing=not no_build, timeout=timeout)
    click.echo(state.kubeconfig)
    click.echo(f"local cluster ready at {state.server} in {time.monotonic() - started:.1f}s", err=True)


@localcluster.command()
@_dir_option
def down(directory: Path | None) -> None:
    """Stop the processes `up` started (by pid); nothing else is touched."""
    stopped = controlplane.down(directory)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running", err=True)


@localcluster.command()
@_dir_option
def env(directory: Path | None) -> None:
    """Print `export KUBECONFIG=...` and `export PATH=<bin>:$PATH` (kubectl of the same release) for the
    running local cluster; use with eval."""
    click.echo(controlplane.env_lines(directory))


@localcluster.command()
@_dir_option
@output_options(TABLE, JSON, YAML)
def status(directory: Path | None, output: Output) -> None:
    """Whether the local cluster runs: its server, kubeconfig and each component's process.

    \b
    Example:
      deployctl localcluster status -o json
    """
    doc = controlplane.status(directory)
    if output.data(doc):
        return
    components = doc["components"]
    assert isinstance(components, dict)
    rows = [(name, "running" if ok else "stopped") for name, ok in sorted(components.items())]
    head = f"{'running' if doc['running'] else 'not running'}: {doc['dir']}"
    if doc["server"]:
        head += f"\nserver {doc['server']}, kubeconfig {doc['kubeconfig']}"
    output.write(head + ("\n\n" + render_table(("COMPONENT", "PROCESS"), rows) if rows else ""))
