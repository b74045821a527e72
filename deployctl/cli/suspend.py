"""`deployctl suspend` and `deployctl resume`: leave an app's workloads alone while someone debugs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import click

from deployctl.cli.options import audit_options, selection_options
from deployctl.cli.output import Output, render_table
from deployctl.cli.reconcile import (
    _default_trigger,
    _split_allowed,
    load_desired,
)
from deployctl.model.audit_target import AuditTarget


@dataclass(frozen=True)
class _Where:
    """The selection options of suspend and resume."""

    repo: str
    ref: str
    envs: tuple[str, ...]
    apps: tuple[str, ...]
    kubeconfig: str | None
    context: str | None
    allowed_namespaces: tuple[str, ...]


def _run(where: _Where, *, suspend: bool, reason: str, output: Output, audit: AuditTarget) -> None:
    from deployctl.app.suspend import SuspendRequest, set_suspended
    from deployctl.model.audit import current_actor
    from deployctl.reconcile.observe import ClusterPool

    repo, ref, envs, apps = where.repo, where.ref, where.envs, where.apps
    if not envs:
        raise click.UsageError("give the environment with --env ENV")
    desired = load_desired(repo, ref)
    from deployctl.edges.audit.url import open_target

    store = open_target(audit)
    try:
        request = SuspendRequest(suspend=suspend, reason=reason, actor=current_actor(), now=datetime.now(UTC),
                                 trigger=_default_trigger())
        results = set_suspended(
            desired, ClusterPool(kubeconfig=where.kubeconfig or None, context=where.context), request,
            envs=envs, apps=apps, store=store, allowed_namespaces=_split_allowed(where.allowed_namespaces),
        )
    finally:
        if store is not None:
            store.close()
    if output.data([r.as_dict() for r in results]):
        return
    rows = [(r.env, r.app, r.result if r.changed else f"already {r.result}", ", ".join(r.workloads), r.by, r.reason)
            for r in results]
    output.write(render_table(("ENV", "APP", "NOW", "WORKLOADS", "BY", "REASON"), rows))




@click.command()
@selection_options
@click.option("--reason", required=True, metavar="TEXT", help="Why (shown by status, kept in the audit history).")
@audit_options()
def suspend(repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...], kubeconfig: str | None,
            context: str | None, allowed_namespaces: tuple[str, ...], output: Output, reason: str,
            audit: AuditTarget) -> None:
    """Make reconcile and watch leave the workloads of --env (and --app) alone until `resume`.

    The managed workloads get the annotation deployctl.dev/suspended (with who, when and why);
    reconcile reports them as suspended instead of applying, status shows them, and both
    suspend and resume are recorded in the audit history.

    \b
    Example:
      deployctl suspend --env production --app checkout --reason "INC-42: debugging a memory leak"
      deployctl resume --env production --app checkout
    """
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    _run(_Where(repo, ref, envs, apps, kubeconfig, context, allowed_namespaces), suspend=True,
         reason=reason.strip(), output=output, audit=audit)


@click.command()
@selection_options
@click.option("--reason", default="resumed", show_default=True, metavar="TEXT", help="Why, for the audit history.")
@audit_options()
def resume(repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...], kubeconfig: str | None,
           context: str | None, allowed_namespaces: tuple[str, ...], output: Output, reason: str,
           audit: AuditTarget) -> None:
    """Let reconcile and watch manage the workloads `suspend` set aside again.

    \b
    Example:
      deployctl resume --env production --app checkout
    """
    _run(_Where(repo, ref, envs, apps, kubeconfig, context, allowed_namespaces), suspend=False,
         reason=reason, output=output, audit=audit)
