"""`deployctl verify`: verify a deploy against its metrics again, by hand."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from deployctl.cli.output import JSON, TABLE, YAML, Output, output_options, render_table
from deployctl.model.printable import printable
from deployctl.settings import AUDIT

if TYPE_CHECKING:
    from deployctl.app.verify import VerifyReport
    from deployctl.model.audit import AuditRecord, AuditStore
    from deployctl.model.verification import Verification


def render_reports(reports: Sequence[VerifyReport]) -> str:
    """One row per check of each verification, then each verdict with its reason and the action taken."""
    rows = []
    lines = []
    for report in reports:
        v = report.verification
        for c in v.checks:
            values = ", ".join("-" if m.value is None else f"{m.value:.6g}" for m in c.measurements)
            rows.append((v.env, v.app, v.sha[:12], c.name, "pass" if c.passed else "FAIL", c.wanted, values))
        lines.append(printable(f"{v.env}/{v.app} {v.sha[:12]}: {v.result}: {v.reason}"))
        if report.action:
            lines.append(printable(f"{v.env}/{v.app}: {report.action}"))
    table = render_table(("ENV", "APP", "SHA", "CHECK", "VERDICT", "WANTED", "VALUES"), rows)
    return "\n".join([table, *lines])


@click.command()
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False),
              help="The deploy repo (its deployctl.yaml holds the checks).")
@click.option("--ref", default="HEAD", show_default=True, help="Branch, tag or commit of the deploy repo to read.")
@click.option("--env", "env", required=True, help="The environment.")
@click.option("--app", "app", required=True, help="The app.")
@click.option("--sha", default=None, help="Verify the rollout of this SHA (a prefix) [default: the newest].")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG",
              help="Kubeconfig, for on_verification_failure: freeze.")
@click.option("--audit", "audit_url", default=None, envvar=AUDIT.name,
              help="Audit store URL [default: the local SQLite file].")
@output_options(TABLE, JSON, YAML)
def verify(repo: str, ref: str, env: str, app: str, sha: str | None, kubeconfig: str | None, audit_url: str | None,
           output: Output) -> None:
    """Verify the newest succeeded rollout of --app in --env against its metrics, again.

    Runs the app's verify checks (deployctl.yaml) on $DEPLOYCTL_PROMETHEUS_URL for their window
    and records the result (verified or verification-failed) beside the rollout in the audit
    history. Exit 0 when verified, 1 when not.

    \b
    Example:
      DEPLOYCTL_PROMETHEUS_URL=http://prometheus:9090 deployctl verify --env staging --app web
    """
    from deployctl.app.verify import VerifyRun, prometheus_from_settings, verify_latest
    from deployctl.edges.audit.url import open_store
    from deployctl.errors import InvalidInputError
    from deployctl.reconcile.observe import ClusterPool

    prometheus = prometheus_from_settings()
    if prometheus is None:
        raise InvalidInputError("set DEPLOYCTL_PROMETHEUS_URL to the Prometheus that verifies deploys")
    from deployctl.edges.git.repo import read_desired_state

    desired = read_desired_state(repo, ref=ref)
    store = open_store(audit_url)
    try:
        report = verify_latest(desired, VerifyRun(prometheus, store, trigger="ci" if os.environ.get("CI") else "manual"), env=env, app=app,
                               sha=sha, clusters=ClusterPool(kubeconfig=kubeconfig or None), repo=repo)
    finally:
        store.close()
    if not output.data(report.as_dict()):
        output.write(render_reports([report]))
    sys.exit(0 if report.verification.ok else 1)


def latest_verifications(store: AuditStore, records: Sequence[AuditRecord]) -> dict[int, Verification]:
    """The newest verification of each attempt that has one."""
    from deployctl.app import verify as verification

    return verification.latest_verifications(store, [r.id for r in records])


def with_verification(event: dict[str, Any], verification: Verification | None) -> dict[str, Any]:
    """An exported attempt with its latest verification (result and reason), when it has one; and whether
    that verification's row verifies in the audit chain."""
    if verification is None:
        return event
    return {**event, "verification": verification.result, "verification_reason": verification.reason,
            "verification_chain_verified": verification.chain_unverified is None,
            "verification_chain_unverified_reason": verification.chain_unverified}  # fmt: skip
