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

from deployctl.cli.output import output_option, render_table
from deployctl.edges.audit.url import AUDIT_ENV, default_audit_url, open_store
from deployctl.errors import InvalidInputError
from deployctl.model.audit import EVENT_FIELDS, AuditRecord, AuditStore, parse_when, record_to_event

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
        f"[default: ${AUDIT_ENV}, else {default_audit_url()}]",
    )(f)


def filter_options(f: F) -> F:
    for decorator in reversed(
        [
            click.option("--env", help="Only this environment."),
            click.option("--app", help="Only this app."),
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
            heading + "\n" + _indent(render_table(HISTORY_HEADERS, [history_row(r) for r in items]))
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
@output_option("table", "json", "csv", default="table")
def history(
    audit_url: str | None,
    env: str | None,
    app: str | None,
    since: datetime | None,
    until: datetime | None,
    sha: str | None,
    limit: int,
    by_release: bool,
    output: str,
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
        records = store.query(env=env, app=app, since=since, until=until, sha=sha, limit=limit or None)
    finally:
        store.close()
    if output == "json":
        click.echo(json.dumps([record_to_event(r) for r in records], indent=2))
    elif output == "csv":
        click.echo(render_csv(records), nl=False)
    elif not records:
        click.echo("No deploy attempts match.")
    elif by_release:
        click.echo(render_history_by_release(records))
    else:
        click.echo(render_table(HISTORY_HEADERS, [history_row(r) for r in records]))


@click.group()
def events() -> None:
    """Deploy attempts as events for other systems."""


@events.command("export")
@audit_option
@filter_options
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write [default: stdout].")
def export(
    audit_url: str | None,
    env: str | None,
    app: str | None,
    since: datetime | None,
    until: datetime | None,
    fmt: str,
    output: io.TextIOBase,
) -> None:
    """Export attempts as JSON Lines, oldest first: one object per attempt, stable field names.

    \b
    Example (load into a warehouse next to product analytics):
      deployctl events export --format jsonl --since 1d > deploys.jsonl
    """
    store = _read(audit_url)
    try:
        records = store.query(env=env, app=app, since=since, until=until)
    finally:
        store.close()
    for record in reversed(records):
        output.write(json.dumps(record_to_event(record), separators=(",", ":")) + "\n")


@click.group()
def notify() -> None:
    """Deploy notifications (webhook, Slack) from the audit outbox."""


@notify.command("drain")
@audit_option
@click.option(
    "--settings",
    "settings_file",
    envvar="DEPLOYCTL_SETTINGS",
    type=click.Path(dir_okay=False),
    help="Controller settings YAML with a 'notify:' list [default: $DEPLOYCTL_SETTINGS].",
)
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to keep retrying failed deliveries; 0 is a single pass.",
)
def drain(audit_url: str | None, settings_file: str | None, max_wait: float) -> None:
    """Deliver pending notifications, retrying with backoff; exits 1 if some remain undelivered.

    \b
    Example (a CI step after the deploy step, which it never blocks):
      deployctl notify drain --settings /etc/deployctl/settings.yaml
    """
    from deployctl.edges.notify import NotifyError, load_settings
    from deployctl.edges.notify import drain as drain_outbox

    settings = load_settings(settings_file)
    if not settings.sinks:
        click.echo("no notification sinks configured (settings: --settings FILE or $DEPLOYCTL_SETTINGS)")
        return
    store = open_store(audit_url)
    try:
        report = drain_outbox(store, settings, max_wait_seconds=max_wait)
    finally:
        store.close()
    for sink, count in report.delivered_by_sink.items():
        click.echo(f"{sink}: {count} delivered")
    if not report.ok:
        raise NotifyError(
            f"{report.pending + len(report.gave_up)} notification(s) not delivered yet "
            f"({report.pending} waiting for a retry, {len(report.gave_up)} given up); "
            "run `deployctl notify drain` again later"
        )


@click.command()
@audit_option
@filter_options
@click.option(
    "--output",
    "-o",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="deploys.html (self-contained, interactive) or deploys.png (needs chromium).",
)
@click.option("--title", default="Deploys", show_default=True)
@click.option(
    "--overlay",
    metavar="prometheus=URL|csv=FILE",
    help="A product metric drawn above the deploy lanes: a Prometheus range query (with --query) "
    "or a CSV of time,value[,series] (docs/analytics.md).",
)
@click.option("--query", metavar="PROMQL", help="The PromQL of --overlay prometheus=URL.")
def timeline(
    audit_url: str | None,
    env: str | None,
    app: str | None,
    since: datetime | None,
    until: datetime | None,
    output_path: str,
    title: str,
    overlay: str | None,
    query: str | None,
) -> None:
    """Plot deploys over time: one lane per app, markers coloured by result.

    \b
    Examples:
      deployctl timeline --env production --since 7d --output deploys.html
      deployctl timeline --since 2d --output deploys.png
      deployctl timeline --app web --since 14d --output deploys.html \\
        --overlay prometheus=http://prometheus:9090 --query 'sum(rate(checkout_total[5m]))'
      deployctl timeline --since 14d --overlay csv=confirmed_hourly.csv --output deploys.html
    """
    from deployctl.views import timeline as plot

    if query is not None and overlay is None:
        raise click.UsageError("--query goes with --overlay prometheus=URL")
    store = _read(audit_url)
    try:
        records = store.query(env=env, app=app, since=since, until=until)
    finally:
        store.close()
    series, span = None, None
    if overlay is not None:
        from deployctl.edges.metrics import load_overlay

        if since is not None or overlay.startswith("prometheus="):  # a CSV's own range is shown whole
            span = plot.time_range(records, since=since, until=until, now=datetime.now(UTC))
        series = load_overlay(overlay, query=query, start=span[0] if span else None, end=span[1] if span else None)
    written = plot.write_timeline(records, output_path, title=title, overlay=series, time_range=span)
    extra = f", {series.points} metric point(s) in {len(series.series)} series" if series else ""
    click.echo(f"{written}: {len(records)} deploy attempt(s){extra}")
