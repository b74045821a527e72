"""`deployctl watch`: run the controller (mirror, reconcile loop, webhooks, metrics, leader election)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from deployctl import settings
from deployctl.cli.options import (
    UiAuthInput,
    audit_options,
    cluster_options,
    overlay_options,
    ui_auth_options,
)
from deployctl.cli.output import Duration
from deployctl.errors import InvalidInputError
from deployctl.model.audit_target import AuditTarget

if TYPE_CHECKING:
    from deployctl.ui.data import OverlaySource


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInputError(f"--listen {text!r}: give HOST:PORT, e.g. 0.0.0.0:8080 or 127.0.0.1:9000")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - ":8080" means every interface


@click.command()
@click.option("--repo", required=True, metavar="URL|PATH",
              help="The deploy repo: a path, file://, https:// (token in $DEPLOYCTL_GIT_TOKEN) or ssh "
              "(key in $DEPLOYCTL_GIT_SSH_KEY).")
@click.option("--branch", default="main", show_default=True, help="The branch to keep the cluster on.")
@click.option("--interval", type=Duration(), default="30s", show_default=True,
              help="Fetch and reconcile this often even without a webhook (finds and corrects drift).")
@click.option("--listen", default="0.0.0.0:8080", show_default=True, help="HOST:PORT of the HTTP endpoint.")
@audit_options()
@cluster_options
@click.option("--mirror-dir", type=click.Path(file_okay=False), envvar=settings.MIRROR_DIR.name,
              help="Where to keep the local mirror [default: ~/.cache/deployctl/mirrors/<hash>/deploy.git].")
@click.option("--timeout", type=Duration(), default="5m", show_default=True, help="How long one reconcile waits for rollouts.")
@click.option("--concurrency", default=16, show_default=True, help="Applies in flight at once.")
@click.option("--webhook-secret-file", type=click.Path(dir_okay=False),
              help="File holding the webhook secret [default: $DEPLOYCTL_WEBHOOK_SECRET_FILE, else "
              "$DEPLOYCTL_WEBHOOK_SECRET]. Without a secret every hook is refused with 401.")
@click.option("--lease-name", default="deployctl", show_default=True, help="Name of the leader Lease.")
@click.option("--lease-namespace", default=None,
              help="Namespace of the leader Lease [default: $POD_NAMESPACE, the pod's own, else default].")
@click.option("--identity", default=None, help="This replica's name in the Lease [default: <hostname>-<pid>].")
@click.option("--lease-duration", type=Duration(), default="15s", show_default=True,
              help="How long a leader that stopped renewing keeps the Lease.")
@click.option("--renew-deadline", type=Duration(), default="10s", show_default=True,
              help="A leader that could not renew for this long stops acting.")
@click.option("--retry-period", type=Duration(), default="2s", show_default=True, help="How often to try to acquire or renew.")
@click.option("--no-leader-election", is_flag=True, help="Act without a Lease (one replica only).")
@click.option("--shards", type=click.IntRange(0, 256), default=0, show_default=True, envvar=settings.SHARDS.name,
              help="Share the apps across every replica by this many slot Leases (32-64 is a good number) "
              "instead of one leader doing all the work; needs the PostgreSQL audit store. 0: one leader.")
@click.option("--advertise-url", default=None, metavar="URL",
              help="Where the other replicas forward webhooks to this one while it leads "
              "[default: http://$POD_IP:PORT, else http://HOST:PORT of --listen when HOST is one address].")
@click.option("--max-connections", default=256, show_default=True,
              help="Open HTTP connections at most; over it, the oldest idle one is closed.")
@click.option("--header-timeout", type=Duration(), default="10s", show_default=True,
              help="Close a connection that has not sent a complete request head within this.")
@click.option("--body-timeout", type=Duration(), default="10s", show_default=True,
              help="Answer 408 to a request whose body has not arrived within this.")
@click.option("--no-ui", is_flag=True, help="Do not serve the dashboard (/ui/, /api/v1/) on the listener.")
@ui_auth_options("ui-")
@overlay_options("ui-")
def watch(repo: str, branch: str, interval: float, listen: str, audit: AuditTarget,
          kubeconfig: str | None, context: str | None, allowed_namespaces: tuple[str, ...],
          mirror_dir: str | None, timeout: float, concurrency: int, webhook_secret_file: str | None,
          lease_name: str, lease_namespace: str | None, identity: str | None, lease_duration: float,
          renew_deadline: float, retry_period: float, no_leader_election: bool, shards: int, advertise_url: str | None,
          max_connections: int, header_timeout: float, body_timeout: float, no_ui: bool,
          ui_auth: UiAuthInput, overlay: OverlaySource | None) -> None:
    """Keep the cluster on a branch of the deploy repo: reconcile every new commit, correct drift.

    Fetches the branch into a local mirror and reconciles its head on every push webhook
    (POST /hooks/github, /hooks/gitlab, /hooks/generic) and every --interval. Serves
    GET /healthz, /readyz and /metrics. With several replicas, only the holder of the
    leader Lease acts. The dashboard (see `deployctl ui`) is served under /ui/ and
    /api/v1/ unless --no-ui. SIGTERM stops acting at once, closes open audit records as
    interrupted, releases the Lease and exits 0.

    \b
    Example:
      DEPLOYCTL_WEBHOOK_SECRET=... deployctl watch --repo https://github.com/acme/deploy.git \\
          --interval 30s --listen 0.0.0.0:8080 --allow-namespace shop-staging
    """
    from deployctl.controller.forward import usable_address
    from deployctl.controller.httpserver import ServerLimits
    from deployctl.controller.loop import ControllerSettings, controller_runs
    from deployctl.controller.serve import (
        WatchOptions,
        identity_default,
        in_cluster_namespace,
        serve,
        split_namespaces,
    )
    from deployctl.controller.serve import advertise_url as default_advertise_url
    from deployctl.controller.webhook import load_secret
    from deployctl.edges.git.mirror import default_mirror_dir
    from deployctl.edges.kube.lease import LeaseConfig
    from deployctl.edges.kube.shards import ShardConfig

    host, port = parse_listen(listen)
    if max_connections < 1:
        raise InvalidInputError(f"--max-connections {max_connections}: give at least 1")
    if advertise_url is not None and usable_address(advertise_url) is not None:
        raise InvalidInputError(f"--advertise-url {advertise_url!r}: {usable_address(advertise_url)}; "
                                "give http://HOST:PORT")
    dashboard_auth = None if no_ui else ui_auth.rule(host)
    lease = None
    shard_config = None
    if shards and no_leader_election:
        raise click.UsageError("--shards shares the apps by Leases: it does not go with --no-leader-election")
    if shards:
        shard_config = ShardConfig(
            namespace=lease_namespace or in_cluster_namespace(), identity=identity or identity_default(),
            slots=shards, name=lease_name, lease_duration=lease_duration, renew_deadline=renew_deadline,
            retry_period=retry_period)
    elif not no_leader_election:
        lease = LeaseConfig(
            name=lease_name,
            namespace=lease_namespace or in_cluster_namespace(),
            identity=identity or identity_default(),
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            address=advertise_url or default_advertise_url(host, port),
        )
    options = WatchOptions(
        repo=repo,
        mirror_dir=Path(mirror_dir) if mirror_dir else default_mirror_dir(repo),
        settings=ControllerSettings(
            branch=branch,
            interval=interval,
            runs=controller_runs(
                timeout=timeout, concurrency=concurrency, allowed_namespaces=split_namespaces(allowed_namespaces),
                # a replica that dies mid-run frees its environments as soon as it loses the leadership
                lock_lease=lease_duration,
            ),
        ),
        listen_host=host,
        listen_port=port,
        audit=audit,
        kubeconfig=kubeconfig or None,  # every file of $KUBECONFIG, merged
        context=context,
        lease=lease,
        shards=shard_config,
        webhook_secret=load_secret(file=webhook_secret_file),
        limits=ServerLimits(
            max_connections=max_connections,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
        ),
        ui_auth=dashboard_auth,
        ui_overlay=overlay,
    )
    sys.exit(serve(options))
