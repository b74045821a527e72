"""`deployctl ui`: the read-only web dashboard on its own listener."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from deployctl import settings
from deployctl.cli.output import Duration
from deployctl.errors import InvalidInputError


@click.command()
@click.option("--repo", required=True, metavar="PATH|URL",
              help="The deploy repo: a local path (read at --ref), or a URL (mirrored and fetched every "
              "--fetch-interval, token in $DEPLOYCTL_GIT_TOKEN or key in $DEPLOYCTL_GIT_SSH_KEY).")
@click.option("--ref", default="HEAD", show_default=True, help="For a local repo: the ref to show.")
@click.option("--branch", default="main", show_default=True, help="For a URL: the branch to show.")
@click.option("--audit", "audit_url", default=None, envvar=settings.AUDIT.name, metavar="URL",
              help="Audit store (sqlite:///path or postgresql://...) [default: $DEPLOYCTL_AUDIT, else the local "
              "SQLite file].")
@click.option("--listen", default="127.0.0.1:8090", show_default=True,
              help="HOST:PORT. Anything but a loopback address needs --token-file or --trusted-proxy.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG",
              help="Kubeconfig for the live state [default: $KUBECONFIG, ~/.kube/config or in-cluster].")
@click.option("--context", default=None, help="Use this kubeconfig context for every environment.")
@click.option("--allow-namespace", "allowed_namespaces", multiple=True, metavar="[CTX/]NS",
              envvar=settings.ALLOW_NAMESPACES.name,
              help="Show live state only for these context/namespace pairs; a bare NS means the current context "
              "(repeatable; comma- or space-separated, also in $DEPLOYCTL_ALLOW_NAMESPACES).")
@click.option("--no-cluster", is_flag=True, help="Show the repo and the audit history only (no live state).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File with the bearer token every request must carry [default: $DEPLOYCTL_UI_TOKEN_FILE, "
              "else $DEPLOYCTL_UI_TOKEN].")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDR[/BITS]",
              envvar=settings.UI_TRUSTED_PROXIES.name,
              help="An auth proxy (e.g. oauth2-proxy) whose X-Forwarded-User header is believed (repeatable).")
@click.option("--refresh", default="2s", show_default=True, type=Duration(),
              help="How long a snapshot of the cluster and audit store is reused.")
@click.option("--fetch-interval", default="30s", show_default=True, type=Duration(),
              help="For a URL: how often to fetch it.")
@click.option("--overlay", metavar="prometheus=URL|csv=FILE",
              help="A product metric the timeline page draws above the deploy lanes, as `deployctl timeline "
              "--overlay` does: a Prometheus range query (with --query) or a CSV of time,value[,series].")
@click.option("--query", "promql", metavar="PROMQL", help="The PromQL of --overlay prometheus=URL.")
def ui(repo: str, ref: str, branch: str, audit_url: str | None, listen: str, kubeconfig: str | None,
       context: str | None, allowed_namespaces: tuple[str, ...], no_cluster: bool, token_file: str | None,
       trusted_proxies: tuple[str, ...], refresh: float, fetch_interval: float, overlay: str | None,
       promql: str | None) -> None:
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
    from deployctl.edges.metrics import overlay_kind
    from deployctl.reconcile.observe import ClusterPool
    from deployctl.ui import auth as ui_auth
    from deployctl.ui.data import Dashboard, OverlaySource, RepoView
    from deployctl.ui.server import make_app, run

    if promql is not None and overlay is None:
        raise click.UsageError("--query goes with --overlay prometheus=URL")
    if overlay is not None:
        overlay_kind(overlay, query=promql)  # a wrong spec fails here, not on the first timeline view
    host, port = parse_listen(listen)
    rule = ui_auth.UiAuth.for_listener(host, token=ui_auth.load_token(file=token_file),
                                       trusted_proxies=ui_auth.parse_networks(trusted_proxies))
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
    store = open_store(audit_url, create=False)
    clusters = None if no_cluster else ClusterPool(kubeconfig=kubeconfig.split(":")[0] if kubeconfig else None,
                                                   context=context)
    allowed = settings.split_names(allowed_namespaces)
    dashboard = Dashboard(view, store=store, clusters=clusters, allowed_namespaces=allowed, ttl=refresh,
                          overlay=None if overlay is None else OverlaySource(overlay, promql))

    def ready(url: str) -> None:
        click.echo(f"deployctl dashboard on {url} ({rule.describe()}); Ctrl-C to stop", err=True)

    try:
        asyncio.run(run(make_app(dashboard, rule), host, port, on_ready=ready))
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
