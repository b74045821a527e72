"""``history``, ``events export``, ``notify drain`` and ``timeline``: reading the audit record."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, TypeVar

import click

from deployctl import settings
from deployctl.cli.completion import app_option, env_option
from deployctl.cli.output import JSON, TABLE, YAML, Duration, Output, output_options, render_table
from deployctl.edges.audit.url import AUDIT_ENV, open_store
from deployctl.errors import InvalidInputError
from deployctl.model.audit import EVENT_FIELDS, AuditRecord, AuditStore, parse_when, record_to_event
from deployctl.model.chain import ChainReport
from deployctl.model.printable import printable
from deployctl.settings import AUDIT

F = TypeVar("F", bound=Callable[..., Any])


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value, now=datetime.now(UTC))
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc)) from None


def audit_option(f: F) -> F:
    return click.option(
        "--audit",
        "audit_url",
        envvar=AUDIT_ENV,
        default=None,
        metavar="URL",
        help="Audit store: sqlite:///path/audit.db or postgresql://... "
        f"[default: ${AUDIT_ENV}, else sqlite://$XDG_STATE_HOME/deployctl/audit.db, i.e. {AUDIT.default}]",
    )(f)


def filter_options(f: F) -> F:
    for decorator in reversed(
        [
            env_option,
            app_option,
            click.option(
                "--since", callback=_when, metavar="WHEN", help="From this time: 2d, 90m, 1w or ISO."
            ),
            click.option(
                "--until", callback=_when, metavar="WHEN", help="Up to this time: 2d, 90m, 1w or ISO."
            ),
        ]
    ):
        f = decorator(f)
    return f


def _read(audit_url: str | None) -> AuditStore:
    return open_store(audit_url, create=False)


def query(store: AuditStore, *, envs: tuple[str, ...], apps: tuple[str, ...], limit: int | None = None,
          **filters: Any) -> list[AuditRecord]:
    """``store.query`` with repeatable --env/--app: one value is filtered by the store, several here."""
    several = len(envs) > 1 or len(apps) > 1
    records = store.query(env=envs[0] if len(envs) == 1 else None, app=apps[0] if len(apps) == 1 else None,
                          limit=None if several else limit, **filters)
    if several:
        records = [r for r in records if (not envs or r.attempt.env in envs) and (not apps or r.attempt.app in apps)]
        records = records[:limit] if limit else records
    return records


def _short(value: str | None, n: int = 12) -> str:
    return (value or "")[:n]


def _name(person: str | None) -> str:
    return (person or "").split(" <")[0]


def _clip(text: str | None, n: int = 50) -> str:
    text = (text or "").splitlines()[0] if text else ""
    return text if len(text) <= n else text[: n - 1] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


HISTORY_HEADERS = ("STARTED (UTC)", "ENV", "APP", "RESULT", "SHA", "FROM", "AUTHOR", "TOOK", "TRIGGER",
                   "BY", "RELEASE", "CHANGE")  # fmt: skip


def history_row(record: AuditRecord) -> list[str]:
    a = record.attempt
    return [
        a.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        a.env,
        a.app,
        record.result,
        _short(a.new_sha),
        _short(a.previous_sha),
        _name(a.file_author),
        _duration(record.duration_seconds),
        a.trigger,
        a.actor.user,
        _short(record.release),
        _clip(a.app_commit_summary or a.file_commit_summary),
    ]


def render_history_by_release(records: Sequence[AuditRecord]) -> str:
    """Attempts grouped under one heading per release (deploy commit), newest release first."""
    blocks = []
    for release, group in groupby(records, key=lambda r: r.release):
        items = list(group)
        first = items[0].attempt
        heading = (
            f"release {_short(release) or '(no deploy commit)'}  {_name(first.file_author)}  "
            f"{_clip(first.file_commit_summary, 70)}"
        ).rstrip()
        blocks.append(
            printable(heading) + "\n" + _indent(render_table(HISTORY_HEADERS, [history_row(r) for r in items]))
        )
    return "\n\n".join(blocks)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def render_csv(records: Sequence[AuditRecord]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(EVENT_FIELDS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        event = record_to_event(record)
        event["workloads"] = ";".join(event["workloads"])
        event["reviewers"] = ";".join(event["reviewers"])
        writer.writerow(event)
    return out.getvalue()


@click.command()
@audit_option
@filter_options
@click.option("--sha", help="Only attempts whose new SHA or release (deploy commit) starts with this.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="0: no limit.")
@click.option("--by-release", is_flag=True, help="Group the table by release (deploy commit).")
@output_options(TABLE, JSON, YAML, "csv")
def history(
    audit_url: str | None,
    envs: tuple[str, ...],
    apps: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    sha: str | None,
    limit: int,
    by_release: bool,
    output: Output,
) -> None:
    """Every deploy attempt on record, newest first.

    \b
    Examples:
      deployctl history --env production --since 2d
      deployctl history --app web --sha 3f2a9c1 --output json
      deployctl history --since 2024-05-01T00:00:00Z --by-release
    """
    store = _read(audit_url)
    try:
        records = query(store, envs=envs, apps=apps, since=since, until=until, sha=sha, limit=limit or None)
    finally:
        store.close()
    if output.data([record_to_event(r) for r in records]):
        return
    if output.format == "csv":
        output.write(render_csv(records).rstrip("\n"))
    elif not records:
        output.write("No deploy attempts match.")
    elif by_release:
        output.write(render_history_by_release(records))
    else:
        output.write(render_table(HISTORY_HEADERS, [history_row(r) for r in records]))


@click.group()
def events() -> None:
    """Deploy attempts as events for other systems."""


@events.command("export")
@audit_option
@filter_options
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default=None, hidden=True,
              help="The same as -o jsonl (before one output grammar).")
@output_options("jsonl", JSON, YAML, default="jsonl", legacy_file=True)
def export(
    audit_url: str | None,
    envs: tuple[str, ...],
    apps: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    fmt: str | None,
    output: Output,
) -> None:
    """Export attempts as JSON Lines, oldest first: one object per attempt, stable field names.

    -o json and -o yaml write the same objects as one list.

    \b
    Example (load into a warehouse next to product analytics):
      deployctl events export --since 1d --out deploys.jsonl
    """
    store = _read(audit_url)
    try:
        records = query(store, envs=envs, apps=apps, since=since, until=until)
    finally:
        store.close()
    events_ = [record_to_event(record) for record in reversed(records)]
    if not output.data(events_) and events_:
        output.lines(json.dumps(event, separators=(",", ":")) for event in events_)


@click.group()
def audit() -> None:
    """The audit store itself."""


@audit.command("migrate")
@audit_option
def migrate(audit_url: str | None) -> None:
    """Create the audit store, or migrate its schema to this deployctl's version.

    Every command does this when it opens a store its role may change; with PostgreSQL's two
    roles (docs/audit.md), run it with the owner role's URL before upgrading the writers.

    \b
    Example:
      deployctl audit migrate --audit postgresql://deployctl_owner@db:5432/deploys
    """
    store = open_store(audit_url)
    try:
        click.echo(f"schema version {store.schema_version()}")  # type: ignore[attr-defined]
    finally:
        store.close()


@audit.command("verify")
@audit_option
@click.option("--since", "since_id", type=click.IntRange(min=1), metavar="ID",
              help="Start at attempt ID, a known-good point (its link to the row before it is trusted).")
@output_options(TABLE, JSON, YAML)
def verify(audit_url: str | None, since_id: int | None, output: Output) -> None:
    """Check the audit chain: every row's hash, its link to the row before it and its MAC.

    Exits 0 when the chain holds, 1 naming the first row that breaks it and how (inserted with SQL,
    edited, deleted, reordered, a MAC that does not match). MACs are checked with the keys in
    $DEPLOYCTL_AUDIT_KEY. Reads the chain in pages: memory stays flat however long it is.

    \b
    Examples:
      deployctl audit verify --audit postgresql://auditor@db:5432/deploys
      deployctl audit verify --since 48210 -o json
    """
    from deployctl.edges.audit.chain import ChainBrokenError

    store = _read(audit_url)
    try:
        report = store.verify_chain(since=since_id)
    finally:
        store.close()
    if not output.data(report.as_dict()):
        output.write(render_chain_report(report))
    if report.broken is not None:
        raise ChainBrokenError(f"the audit chain is broken: {report.broken.message}")


def render_chain_report(report: ChainReport) -> str:
    """What verify found, for a person: rows checked, MACs, unkeyed rows, where the chain began."""
    span = f" (#{report.first_seq}–#{report.last_seq})" if report.rows else ""
    verdict = "holds" if report.ok else "checked up to the break"
    lines = [f"chain {verdict}: {report.rows:,} row(s){span}"
             + (f", head {report.head[:16]}…" if report.head and report.ok else "")]  # fmt: skip
    if report.macs_checked:
        lines.append(f"MACs checked with {settings.AUDIT_KEY.name}: {report.keyed_rows:,} keyed row(s)")
    elif report.keyed_rows:
        lines.append(f"MACs NOT checked: {settings.AUDIT_KEY.name} is not set ({report.keyed_rows:,} keyed row(s))")
    if report.unkeyed_rows:
        runs = "; ".join(first if first == last else f"{first} – {last}" for first, last in report.unkeyed)
        lines.append(f"unkeyed (written without a key): {report.unkeyed_rows:,} row(s): {runs}")
    if report.migrated_through:
        lines.append(f"rows #1–#{report.migrated_through} were chained by migration 5 as found then, "
                     "not when written")  # fmt: skip
    return "\n".join(lines)


@click.group()
def notify() -> None:
    """Deploy notifications (webhook, Slack) from the audit outbox."""


@notify.command("drain")
@audit_option
@click.option(
    "--settings",
    "settings_file",
    envvar=settings.SETTINGS_FILE.name,
    type=click.Path(dir_okay=False),
    help="Controller settings YAML with a 'notify:' list [default: $DEPLOYCTL_SETTINGS].",
)
@click.option(
    "--max-wait",
    type=Duration(allow_zero=True),
    default="60s",
    show_default=True,
    help="How long to keep retrying failed deliveries (e.g. 90s, 10m); 0 is a single pass.",
)
@output_options(TABLE, JSON, YAML)
def drain(audit_url: str | None, settings_file: str | None, max_wait: float, output: Output) -> None:
    """Deliver pending notifications, retrying with backoff; exits 1 if some remain undelivered.

    \b
    Example (a CI step after the deploy step, which it never blocks):
      deployctl notify drain --settings /etc/deployctl/settings.yaml
    """
    from deployctl.edges.notify import drain as drain_outbox
    from deployctl.edges.sinks import NotifyError, load_settings

    settings = load_settings(settings_file)
    if not settings.sinks:
        if not output.data({"sinks": 0, "delivered_by_sink": {}, "pending": 0, "gave_up": []}):
            output.write("no notification sinks configured (settings: --settings FILE or $DEPLOYCTL_SETTINGS)")
        return
    store = open_store(audit_url)
    try:
        report = drain_outbox(store, settings, max_wait_seconds=max_wait)
    finally:
        store.close()
    doc = {"sinks": len(settings.sinks), "delivered_by_sink": dict(report.delivered_by_sink),
           "pending": report.pending, "gave_up": list(report.gave_up)}
    if not output.data(doc):
        for sink, count in report.delivered_by_sink.items():
            output.write(f"{sink}: {count} delivered")
    if not report.ok:
        raise NotifyError(
            f"{report.pending + len(report.gave_up)} notification(s) not delivered yet "
            f"({report.pending} waiting for a retry, {len(report.gave_up)} given up); "
            "run `deployctl notify drain` again later"
        )


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
    audit_url: str | None,
    envs: tuple[str, ...],
    apps: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    title: str,
    output: Output,
    overlay: str | None,
    promql: str | None,
) -> None:
    """Plot deploys over time into --out FILE: one lane per app, markers coloured by result.

    FILE is deploys.html (self-contained, interactive) or deploys.png (needs chromium).

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
    store = _read(audit_url)
    try:
        records = query(store, envs=envs, apps=apps, since=since, until=until)
    finally:
        store.close()
    series, span = None, None
    if overlay is not None:
        from deployctl.edges.metrics import load_overlay

        if since is not None or overlay.startswith("prometheus="):  # a CSV's own range is shown whole
            span = plot.time_range(records, since=since, until=until, now=datetime.now(UTC))
        series = load_overlay(overlay, query=promql, start=span[0] if span else None, end=span[1] if span else None)
    written = plot.write_timeline(records, output.path, title=title, overlay=series, time_range=span)
    summary = Output(output.format)  # the chart goes to the file, this summary to stdout
    doc: dict[str, object] = {"file": str(written), "attempts": len(records)}
    if series:
        doc["metric_points"] = series.points
        doc["metric_series"] = len(series.series)
    if not summary.data(doc):
        extra = f", {series.points} metric point(s) in {len(series.series)} series" if series else ""
        summary.write(f"{written}: {len(records)} deploy attempt(s){extra}")
