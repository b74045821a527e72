"""``notify drain``: deliver the audit outbox's deploy events to the notification sinks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import click

from deployctl import settings
from deployctl.cli.audit import _when, audit_option
from deployctl.cli.output import JSON, TABLE, YAML, Duration, Output, output_options
from deployctl.edges.audit.url import open_store
from deployctl.errors import InvalidInputError
from deployctl.model.audit_target import AuditTarget
from deployctl.model.printable import printable


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
@click.option("--sink", "sink_names", multiple=True, metavar="NAME",
              help="Only this sink (repeatable); its name as `deployctl notify drain -o json` reports it.")
@click.option("--from-start", is_flag=True,
              help="Backfill: also send the --sink every event on record it has not received, not only those "
              "since it was added. Consumers dedupe by event id, so a repeat is harmless.")
@click.option("--since", "backfill_since", callback=_when, metavar="WHEN",
              help="Backfill the --sink with the events since WHEN (2d, 90m, 1w or ISO) it has not received.")
@output_options(TABLE, JSON, YAML)
def drain(audit: AuditTarget, settings_file: str | None, max_wait: float, sink_names: tuple[str, ...],
          from_start: bool, backfill_since: datetime | None, output: Output) -> None:
    """Deliver pending notifications, retrying with backoff; exits 1 if some remain undelivered.

    \b
    Examples (a CI step after the deploy step, which it never blocks; a sink added later gets the history):
      deployctl notify drain --settings /etc/deployctl/settings.yaml
      deployctl notify drain --settings /etc/deployctl/settings.yaml --sink warehouse --from-start
    """
    from deployctl.edges.notify import drain as drain_outbox
    from deployctl.edges.sinks import NotifyError, load_settings

    if (from_start or backfill_since is not None) and not sink_names:
        raise click.UsageError("--from-start and --since backfill one sink: name it with --sink NAME")
    if from_start and backfill_since is not None:
        raise click.UsageError("give --from-start or --since, not both")
    backfill_from = datetime(1970, 1, 1, tzinfo=UTC) if from_start else backfill_since
    settings = load_settings(settings_file)
    if sink_names:
        known = {s.name for s in settings.sinks}
        unknown = [n for n in sink_names if n not in known]
        if unknown:
            raise InvalidInputError(
                f"--sink {unknown[0]!r}: no such sink in the settings; the sinks are: {', '.join(sorted(known)) or 'none'}"
            )
        settings = replace(settings, sinks=tuple(s for s in settings.sinks if s.name in sink_names))
    if not settings.sinks:
        if not output.data({"sinks": 0, "delivered_by_sink": {}, "pending": 0, "gave_up": [], "untrusted": []}):
            output.write("no notification sinks configured (settings: --settings FILE or $DEPLOYCTL_SETTINGS)")
        return
    store = open_store(audit.url)
    try:
        report = drain_outbox(store, settings, max_wait_seconds=max_wait, backfill_from=backfill_from)
    finally:
        store.close()
    doc = {"sinks": len(settings.sinks), "delivered_by_sink": dict(report.delivered_by_sink),
           "pending": report.pending, "gave_up": list(report.gave_up), "untrusted": list(report.untrusted)}
    if not output.data(doc):
        for sink, count in report.delivered_by_sink.items():
            output.write(f"{sink}: {count} delivered")
        for line in report.untrusted:
            output.write(printable(f"UNTRUSTED, {line}"))
    if not report.ok:
        raise NotifyError(
            f"{report.pending + len(report.gave_up)} notification(s) not delivered yet "
            f"({report.pending} waiting for a retry, {len(report.gave_up)} given up); "
            "run `deployctl notify drain` again later"
        )
