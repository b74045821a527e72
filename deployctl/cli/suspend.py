"""`deployctl suspend` and `deployctl resume`: leave an app's workloads alone while someone debugs."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from deployctl.cli.options import audit_options, selection_options
from deployctl.cli.output import Output, render_table
from deployctl.cli.reconcile import (
    _default_trigger,
    _split_allowed,
    load_desired,
)
from deployctl.model.audit import AuditTarget


def _run(*, suspend: bool, repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...],
         kubeconfig: str | None, context: str | None, allowed_namespaces: tuple[str, ...], output: Output,
         reason: str, audit: AuditTarget) -> None:
    from deployctl.app.suspend import set_suspended
    from deployctl.model.audit import current_actor
    from deployctl.reconcile.reconciler import ClusterPool

    if not envs:
        raise click.UsageError("give the environment with --env ENV")
    desired = load_desired(repo, ref)
    from deployctl.edges.audit.url import open_target

    store = open_target(audit)
    try:
        results = set_suspended(
            desired, ClusterPool(kubeconfig=kubeconfig or None, context=context), envs=envs, apps=apps,
            suspend=suspend, reason=reason, actor=current_actor(), now=datetime.now(UTC), store=store,
            trigger=_default_trigger(), allowed_namespaces=_split_allowed(allowed_namespaces),
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
    _run(suspend=True, repo=repo, ref=ref, envs=envs, apps=apps, kubeconfig=kubeconfig, context=context,
         allowed_namespaces=allowed_namespaces, output=output, reason=reason.strip(), audit=audit)


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
    _run(suspend=False, repo=repo, ref=ref, envs=envs, apps=apps, kubeconfig=kubeconfig, context=context,
         allowed_namespaces=allowed_namespaces, output=output, reason=reason, audit=audit)
