"""``history`` and ``events export``: reading the audit record (``timeline`` is cli/timeline.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from deployctl.app.history import check_records
from deployctl.cli.completion import app_option, env_option
from deployctl.cli.options import audit_options
from deployctl.cli.output import JSON, TABLE, YAML, Output, output_options
from deployctl.edges.audit.url import AUDIT_ENV, open_store
from deployctl.errors import InvalidInputError
from deployctl.model.audit import (
    AuditRecord,
    AuditStore,
    parse_when,
    record_to_event,
)
from deployctl.model.audit_target import AuditTarget
from deployctl.model.chain import ChainReport
from deployctl.model.printable import printable
from deployctl.settings import AUDIT, AUDIT_KEY

F = TypeVar("F", bound=Callable[..., Any])


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value, now=datetime.now(UTC))
    except InvalidInputError as exc:
        raise click.BadParameter(str(exc)) from None


audit_option = audit_options(
    record=False,
    help="Audit store: sqlite:///path/audit.db or postgresql://... "
    f"[default: ${AUDIT_ENV}, else sqlite://$XDG_STATE_HOME/deployctl/audit.db, i.e. {AUDIT.default}]",
)


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


def _read(audit: AuditTarget) -> AuditStore:
    return open_store(audit.url, create=False)


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


@click.group()
def events() -> None:
    """Deploy attempts as events for other systems."""


@events.command("export")
@audit_option
@filter_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "cdevents"]), default=None,
              help="cdevents: one CloudEvent (CDEvents service event, structured JSON) per line, with the same "
              "id a webhook or Kafka sink delivers; jsonl: the same as -o jsonl.")
@click.option("--source", default="/deployctl", show_default=True, metavar="URI",
              help="With --format cdevents: the events' source, as in the sink's settings.")
@click.option("--repo", default=None, help="With --format cdevents: the deploy repo's name, as in the sink's settings.")
@output_options("jsonl", JSON, YAML, default="jsonl", legacy_file=True)
def export(
    audit: AuditTarget,
    envs: tuple[str, ...],
    apps: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    fmt: str | None,
    source: str,
    repo: str | None,
    output: Output,
) -> None:
    """Export attempts as JSON Lines, oldest first: one object per attempt, stable field names.

    -o json and -o yaml write the same objects as one list. --format cdevents writes the deploys
    (succeeded or drift-corrected attempts) as CDEvents, one per line; each event's id is derived from
    its attempt, so it equals the id the webhook and Kafka sinks delivered: dedupe by it.

    \b
    Examples (load into a warehouse next to product analytics):
      deployctl events export --since 1d --out deploys.jsonl
      deployctl events export --format cdevents --source /deployctl/acme-deploy > deploys.ndjson
    """
    if fmt == "cdevents" and output.format != "jsonl":
        raise click.UsageError("--format cdevents writes one event per line (NDJSON): leave out -o json/yaml")
    store = _read(audit)
    try:
        checked = check_records(store, query(store, envs=envs, apps=apps, since=since, until=until))
    finally:
        store.close()
    checked.reverse()
    if fmt == "cdevents":
        from deployctl.edges.events.envelope import http_message

        # A CDEvents consumer counts every service event as a deploy: one whose rows do not verify is left out.
        for c in checked:
            if not c.verified:
                click.echo(printable(f"not exported: attempt {c.record.id} ({c.record.attempt.env}/"
                                     f"{c.record.attempt.app}) does not verify in the audit chain: {c.unverified}"),
                           err=True)  # fmt: skip
        messages = [http_message({**record_to_event(c.record), "repo": repo}, source=source, mode="structured")
                    for c in checked if c.verified]  # fmt: skip
        bodies = [m.body.decode() for m in messages if m is not None]
        if bodies:
            output.lines(bodies)
        return
    events_ = [c.as_dict() for c in checked]
    if not output.data(events_) and events_:
        output.lines(json.dumps(event, separators=(",", ":")) for event in events_)


@click.group()
def audit() -> None:
    """The audit store itself."""


@audit.command("migrate")
@audit_option
def migrate(audit: AuditTarget) -> None:
    """Create the audit store, or migrate its schema to this deployctl's version.

    Every command does this when it opens a store its role may change; with PostgreSQL's two
    roles (docs/audit.md), run it with the owner role's URL before upgrading the writers.

    \b
    Example:
      deployctl audit migrate --audit postgresql://deployctl_owner@db:5432/deploys
    """
    store = open_store(audit.url)
    try:
        click.echo(f"schema version {store.schema_version()}")  # type: ignore[attr-defined]
    finally:
        store.close()


@audit.command("verify")
@audit_option
@click.option("--since", "since_id", type=click.IntRange(min=1), metavar="ID",
              help="Start at attempt ID, a known-good point (its link to the row before it is trusted).")
@output_options(TABLE, JSON, YAML)
def verify(audit: AuditTarget, since_id: int | None, output: Output) -> None:
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

    store = _read(audit)
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
        lines.append(f"MACs checked with {AUDIT_KEY.name}: {report.keyed_rows:,} keyed row(s)")
    elif report.keyed_rows:
        lines.append(f"MACs NOT checked: {AUDIT_KEY.name} is not set ({report.keyed_rows:,} keyed row(s))")
    if report.unkeyed_rows:
        runs = "; ".join(first if first == last else f"{first} – {last}" for first, last in report.unkeyed)
        lines.append(f"unkeyed (written without a key): {report.unkeyed_rows:,} row(s): {runs}")
    if report.migrated_through:
        lines.append(f"rows #1–#{report.migrated_through} were chained as found when the store was migrated "
                     "to the chain, not when written")  # fmt: skip
    return "\n".join(lines)
