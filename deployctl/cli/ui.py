"""`deployctl ui`: the read-only web dashboard on its own listener."""

from __future__ import annotations

import asyncio
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


@click.command()
@click.option("--repo", required=True, metavar="PATH|URL",
              help="The deploy repo: a local path (read at --ref), or a URL (mirrored and fetched every "
              "--fetch-interval, token in $DEPLOYCTL_GIT_TOKEN or key in $DEPLOYCTL_GIT_SSH_KEY).")
@click.option("--ref", default="HEAD", show_default=True, help="For a local repo: the ref to show.")
@click.option("--branch", default="main", show_default=True, help="For a URL: the branch to show.")
@audit_options(record=False)
@click.option("--listen", default="127.0.0.1:8090", show_default=True,
              help="HOST:PORT. Anything but a loopback address needs --token-file or --trusted-proxy.")
@cluster_options
@click.option("--no-cluster", is_flag=True, help="Show the repo and the audit history only (no live state).")
@ui_auth_options()
@click.option("--refresh", default="2s", show_default=True, type=Duration(),
              help="How long a snapshot of the cluster and audit store is reused.")
@click.option("--fetch-interval", default="30s", show_default=True, type=Duration(),
              help="For a URL: how often to fetch it.")
@overlay_options()
def ui(repo: str, ref: str, branch: str, audit: AuditTarget, listen: str, kubeconfig: str | None,
       context: str | None, allowed_namespaces: tuple[str, ...], no_cluster: bool, ui_auth: UiAuthInput,
       refresh: float, fetch_interval: float, overlay: OverlaySource | None) -> None:
    """Serve the read-only dashboard: environments x apps, app pages, timeline, audit records.

    Pages under /ui/, the same data as JSON under /api/v1/ (status, apps/<app>,
    apps/<app>/history, apps/<app>/attempts/<id>, timeline). Nothing can be changed through it.
    Bound to 127.0.0.1 by default; on any other address every request needs the bearer token or
    an X-Forwarded-User header from a trusted proxy (401 otherwise). Ctrl-C stops it.

    \b
    Examples:
      deployctl ui --repo . --audit sqlite:///var/lib/deployctl/audit.db
      deployctl ui --repo https://github.com/acme/deploy.git --listen 0.0.0.0:8090 \\
          --trusted-proxy 127.0.0.1
      deployctl ui --repo . --overlay prometheus=http://prometheus:9090 \\
          --query 'sum(rate(checkout_total[5m]))'
    """
    from deployctl.cli.watch import parse_listen
    from deployctl.edges.audit.url import open_store
    from deployctl.edges.git.mirror import Mirror, classify, default_mirror_dir
    from deployctl.reconcile.observe import ClusterPool
    from deployctl.ui.data import Dashboard, RepoView
    from deployctl.ui.server import make_app, run

    host, port = parse_listen(listen)
    rule = ui_auth.rule(host)
    source = classify(repo)
    if source.kind == "local" and not repo.startswith("file://"):
        if not Path(source.url).exists():
            raise InvalidInputError(f"--repo {repo}: no such directory")
        view = RepoView(source.url, ref=ref)
    else:
        mirror = Mirror(repo, default_mirror_dir(repo), branch=branch)
        mirror.fetch()
        view = RepoView(mirror.path, mirror=mirror, fetch_every=fetch_interval)
    view.read()  # a wrong --repo or --ref fails here, with its message, not on the first page view
    store = open_store(audit.url, create=False)
    clusters = None if no_cluster else ClusterPool(kubeconfig=kubeconfig or None,  # every file, merged
                                                   context=context)
    allowed = settings.split_names(allowed_namespaces)
    dashboard = Dashboard(view, store=store, clusters=clusters, allowed_namespaces=allowed, ttl=refresh,
                          overlay=overlay)

    def ready(url: str) -> None:
        click.echo(f"deployctl dashboard on {url} ({rule.describe()}); Ctrl-C to stop", err=True)

    try:
        asyncio.run(run(make_app(dashboard, rule), host, port, on_ready=ready))
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
