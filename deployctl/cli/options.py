"""The click options several commands share, each written once (as sqlite-utils does with ``output_options``).

A group of options can reach the command as one value (:func:`grouped`): ``--audit`` and ``--no-audit`` are
one :class:`AuditTarget`, the dashboard's token file and trusted proxies one :class:`UiAuthInput`, its metric
overlay and query one ``OverlaySource``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from deployctl import settings
from deployctl.cli.completion import app_option, complete_context, complete_ref, env_option
from deployctl.cli.output import JSON, TABLE, YAML, output_options
from deployctl.model.audit_target import AUDIT_DEFAULT, AuditTarget

if TYPE_CHECKING:
    from deployctl.ui.auth import UiAuth
    from deployctl.ui.data import OverlaySource

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


def stacked(*decorators: Callable[[Any], Any]) -> Callable[[F], F]:
    """The decorators applied as if written one above the other, the first on top."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def grouped(name: str, build: Callable[..., Any], *options: Callable[[Any], Any]) -> Callable[[F], F]:
    """``options`` reach the command as one keyword argument ``name``: ``build(**their values)``."""

    def apply(f: F) -> F:
        own: set[str] = set()

        @functools.wraps(f)
        def command(**kwargs: Any) -> Any:
            kwargs[name] = build(**{k: kwargs.pop(k) for k in list(kwargs) if k in own})
            return f(**kwargs)

        before: list[click.Parameter] = list(getattr(f, "__click_params__", []))
        setattr(command, "__click_params__", list(before))  # noqa: B010 - click keeps its params there
        wrapped: Any = stacked(*options)(command)
        own.update(p.name for p in wrapped.__click_params__ if p not in before and p.name)
        return wrapped  # type: ignore[no-any-return]

    return apply


# -- the deploy repo and the selection -----------------------------------------------------------

repo_option = click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False),
                           help="Path to the deploy repo (bare or with a work tree).")
ref_option = click.option("--ref", default="HEAD", show_default=True, shell_complete=complete_ref,
                          help="Branch, tag or commit of the deploy repo to read.")

# -- the clusters --------------------------------------------------------------------------------

kubeconfig_option = click.option(
    "--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG",
    help="Kubeconfig file(s), os.pathsep-separated and merged like kubectl does [default: $KUBECONFIG, else "
    "in-cluster when run in a pod, else ~/.kube/config].")
context_option = click.option("--context", default=None, shell_complete=complete_context,
                              help="Use this kubeconfig context for every environment (overrides `context:`).")
allow_namespace_option = click.option(
    "--allow-namespace", "allowed_namespaces", multiple=True, metavar="[CTX/]NS", envvar=settings.ALLOW_NAMESPACES.name,
    help="Refuse environments whose context/namespace is not one of these; a bare NS means the current context "
    "only (repeatable; comma- or space-separated, also in $DEPLOYCTL_ALLOW_NAMESPACES).")
cluster_options = stacked(kubeconfig_option, context_option, allow_namespace_option)
"""Which clusters and namespaces a command may read or write."""

selection_options = stacked(repo_option, ref_option, env_option, app_option, cluster_options,
                            output_options(TABLE, JSON, YAML))
"""A deploy repo at a ref, the env/app selection, the clusters, and the output format: plan, status,
reconcile, suspend and resume."""

# -- the audit history ---------------------------------------------------------------------------

AUDIT_HELP = ("Audit store: sqlite:///path/audit.db or postgresql://... [default: $DEPLOYCTL_AUDIT, else the "
              "local SQLite file]")


def audit_options(*, record: bool = True, default: AuditTarget = AUDIT_DEFAULT,
                  help: str = AUDIT_HELP) -> Callable[[F], F]:  # noqa: A002 - click's own word
    """``--audit URL`` (and, for a command that records, ``--no-audit``) as one ``audit: AuditTarget``."""
    options: list[Callable[[Any], Any]] = [
        click.option("--audit", "audit_url", default=None, envvar=settings.AUDIT.name, metavar="URL", help=help)]
    if record:
        options.append(click.option("--no-audit", is_flag=True, help="Do not record this in the audit history."))

    def build(audit_url: str | None, no_audit: bool = False) -> AuditTarget:
        return AuditTarget.at(audit_url, off=no_audit, default=default)

    return grouped("audit", build, *options)


# -- the dashboard's authentication --------------------------------------------------------------


@dataclass(frozen=True)
class UiAuthInput:
    """The dashboard's credentials as given on the command line, turned into a rule once the listener is known."""

    token_file: str | None
    trusted_proxies: tuple[str, ...]

    def rule(self, host: str) -> UiAuth:
        from deployctl.ui import auth as ui_auth

        return ui_auth.UiAuth.for_listener(host, token=ui_auth.load_token(file=self.token_file),
                                           trusted_proxies=ui_auth.parse_networks(self.trusted_proxies))


def ui_auth_options(prefix: str = "") -> Callable[[F], F]:
    """``--[PREFIX]token-file`` and ``--[PREFIX]trusted-proxy`` as one ``ui_auth: UiAuthInput``."""
    options = [
        click.option(f"--{prefix}token-file", "token_file", type=click.Path(dir_okay=False), default=None,
                     help="Bearer token file every dashboard request must carry [default: $DEPLOYCTL_UI_TOKEN_FILE, "
                     "else $DEPLOYCTL_UI_TOKEN]. On a non-loopback listener the dashboard needs it or a trusted proxy."),
        click.option(f"--{prefix}trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDR[/BITS]",
                     envvar=settings.UI_TRUSTED_PROXIES.name,
                     help="An auth proxy (e.g. oauth2-proxy) whose X-Forwarded-User header the dashboard believes "
                     "(repeatable)."),
    ]
    return grouped("ui_auth", lambda token_file, trusted_proxies: UiAuthInput(token_file, tuple(trusted_proxies)),
                   *options)


# -- the dashboard's metric overlay --------------------------------------------------------------


def overlay_options(prefix: str = "") -> Callable[[F], F]:
    """``--[PREFIX]overlay`` and ``--[PREFIX]query`` as one ``overlay: OverlaySource | None``, checked when
    the command starts (a wrong spec fails there, not on the first timeline view)."""
    spec_flag, query_flag = f"--{prefix}overlay", f"--{prefix}query"

    def build(overlay_spec: str | None, overlay_query: str | None) -> OverlaySource | None:
        from deployctl.edges.metrics import overlay_kind
        from deployctl.ui.data import OverlaySource

        if overlay_query is not None and overlay_spec is None:
            raise click.UsageError(f"{query_flag} goes with {spec_flag} prometheus=URL")
        if overlay_spec is None:
            return None
        overlay_kind(overlay_spec, query=overlay_query)
        return OverlaySource(overlay_spec, overlay_query)

    return grouped("overlay", build,
                   click.option(spec_flag, "overlay_spec", metavar="prometheus=URL|csv=FILE",
                                help="A product metric the dashboard's timeline draws above the deploy lanes, as "
                                "`deployctl timeline --overlay` does: a Prometheus range query (with "
                                f"{query_flag}) or a CSV of time,value[,series]."),
                   click.option(query_flag, "overlay_query", metavar="PROMQL",
                                help=f"The PromQL of {spec_flag} prometheus=URL."))
