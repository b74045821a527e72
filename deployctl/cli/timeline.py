"""``timeline``: deploys over time, with their verifications, as an HTML or PNG chart."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from deployctl.cli.audit import _read, audit_option, filter_options, query
from deployctl.cli.output import JSON, TABLE, YAML, Output, output_options
from deployctl.model.audit_target import AuditTarget
from deployctl.model.printable import printable


@click.command()
@audit_option
@filter_options
@click.option("--title", default="Deploys", show_default=True)
@output_options(TABLE, JSON, YAML, legacy_file=True)
@click.option(
    "--overlay",
    metavar="prometheus=URL|csv=FILE",
    help="A product metric drawn above the deploy lanes: a Prometheus range query (with --query) "
    "or a CSV of time,value[,series] (docs/analytics.md).",
)
@click.option("--query", "promql", metavar="PROMQL", help="The PromQL of --overlay prometheus=URL.")
def timeline(
    audit: AuditTarget,
    envs: tuple[str, ...],
    apps: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    title: str,
    output: Output,
    overlay: str | None,
    promql: str | None,
) -> None:
    """Plot deploys over time into --out FILE: one lane per app, markers coloured by result, verifications marked.

    FILE is deploys.html (self-contained, interactive) or deploys.png (needs chromium). Each
    verification of a deploy against its metrics is marked on its app's lane when its verdict came:
    a green ring when verified, a red cross when it failed (hover: the check, its value, the threshold).

    \b
    Examples:
      deployctl timeline --env production --since 7d --out deploys.html
      deployctl timeline --since 2d --out deploys.png -o json
      deployctl timeline --app web --since 14d --out deploys.html \\
        --overlay prometheus=http://prometheus:9090 --query 'sum(rate(checkout_total[5m]))'
      deployctl timeline --since 14d --overlay csv=confirmed_hourly.csv --out deploys.html
    """
    if output.path is None:
        raise click.UsageError("give the chart file with --out deploys.html (or deploys.png)")
    from deployctl.views import timeline as plot

    if promql is not None and overlay is None:
        raise click.UsageError("--query goes with --overlay prometheus=URL")
    from deployctl.app.verify import verifications_of

    store = _read(audit)
    try:
        records = query(store, envs=envs, apps=apps, since=since, until=until)
        verifications = verifications_of(store, [r.id for r in records])
        unverified = store.unverified([r.id for r in records]) if records else {}
    finally:
        store.close()
    series, span = None, None
    if overlay is not None:
        from deployctl.edges.metrics import load_overlay

        if since is not None or overlay.startswith("prometheus="):  # a CSV's own range is shown whole
            span = plot.time_range(records, since=since, until=until, now=datetime.now(UTC))
        series = load_overlay(overlay, query=promql, start=span[0] if span else None, end=span[1] if span else None)
    written = plot.write_timeline(records, output.path, title=title, overlay=series, time_range=span,
                                  unverified=unverified, verifications=verifications)
    summary = Output(output.format)  # the chart goes to the file, this summary to stdout
    untrusted = [v for v in verifications if v.chain_unverified is not None]  # neither a pass nor a failure
    failed = [v for v in verifications if not v.ok and v.chain_unverified is None]
    doc: dict[str, object] = {"file": str(written), "attempts": len(records), "verifications": len(verifications),
                              "verifications_failed": len(failed), "verifications_untrusted": len(untrusted)}
    if series:
        doc["metric_points"] = series.points
        doc["metric_series"] = len(series.series)
    if not summary.data(doc):
        extra = f", {len(verifications)} verification(s) ({len(failed)} failed" if verifications else ""
        extra += (f", {len(untrusted)} UNTRUSTED)" if untrusted else ")") if verifications else ""
        extra += f", {series.points} metric point(s) in {len(series.series)} series" if series else ""
        summary.write(f"{written}: {len(records)} deploy attempt(s){extra}")
        for v in sorted(failed, key=lambda v: v.finished_at):
            summary.write(printable(f"verification-failed: {v.env}/{v.app} {v.sha[:12]} (attempt {v.attempt_id}) "
                                    f"at {v.finished_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: {v.reason}"))
        for v in sorted(untrusted, key=lambda v: v.finished_at):
            summary.write(printable(f"UNTRUSTED: {v.env}/{v.app} {v.sha[:12]} (attempt {v.attempt_id}) claims "
                                    f"{v.result} at {v.finished_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, but its "
                                    f"audit row does not verify in the chain: {v.chain_unverified}"))
