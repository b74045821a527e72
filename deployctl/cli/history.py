"""``history``: every deploy attempt on record with its latest verification, each attempt whose rows do not
verify in the audit chain marked UNTRUSTED."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import groupby

import click

from deployctl.app.history import CHAIN_FIELDS, CheckedRecord, check_records
from deployctl.cli.audit import _read, audit_option, filter_options, query
from deployctl.cli.output import JSON, TABLE, YAML, Output, output_options, render_table
from deployctl.cli.verify import latest_verifications, with_verification
from deployctl.errors import InvalidInputError
from deployctl.model.audit import EVENT_FIELDS, AttemptEvent, AuditRecord
from deployctl.model.audit_target import AuditTarget
from deployctl.model.printable import printable
from deployctl.model.verification import Verification

UNTRUSTED = "UNTRUSTED"
"""The mark on an attempt whose audit rows do not verify in the chain: what it says may not have happened.
(Not to be confused with a deploy's verification against its metrics, ``deployctl verify``.)"""
_MAX_REASON = 400


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
                   "BY", "RELEASE", "CHANGE", "APPROVED")  # fmt: skip


def history_row(checked: CheckedRecord, verifications: Mapping[int, Verification] | None = None) -> list[str]:
    record = checked.record
    a = record.attempt
    verification = (verifications or {}).get(record.id)
    result = record.result
    if verification is not None:
        result += f", {verification.result}" + ("" if verification.chain_unverified is None else f" ({UNTRUSTED})")
    return [
        a.started_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        a.env,
        a.app,
        result if checked.verified else f"{result} ({UNTRUSTED})",
        _short(a.new_sha),
        _short(a.previous_sha),
        _name(a.file_author),
        _duration(record.duration_seconds),
        a.trigger,
        a.actor.user,
        _short(record.release),
        _clip(a.app_commit_summary or a.file_commit_summary),
        _approved(record),
    ]


def _approved(record: AuditRecord) -> str:
    """The pull request and who approved it (require_approval: forge), e.g. ``#7 @bob``; '-' without one."""
    review = record.attempt.review
    if review is None:
        return "-"
    return " ".join([f"#{review.number}", *(a.who for a in review.approvals)])


def render_history_by_release(records: Sequence[CheckedRecord], verifications: Mapping[int, Verification]) -> str:
    """Attempts grouped under one heading per release (deploy commit), newest release first."""
    blocks = []
    for release, group in groupby(records, key=lambda r: r.record.release):
        items = list(group)
        first = items[0].record.attempt
        heading = (
            f"release {_short(release) or '(no deploy commit)'}  {_name(first.file_author)}  "
            f"{_clip(first.file_commit_summary, 70)}"
        ).rstrip()
        blocks.append(
            printable(heading) + "\n"
            + _indent(render_table(HISTORY_HEADERS, [history_row(r, verifications) for r in items]))
        )
    return "\n\n".join(blocks)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def render_unverified(records: Sequence[CheckedRecord]) -> str:
    """The note under a table with rows that do not verify: each one and why, or "" when all verify."""
    bad = [c for c in records if not c.verified]
    if not bad:
        return ""
    lines = [f"{UNTRUSTED}: {len(bad)} attempt(s) above do not verify in the audit chain; what their rows say "
             "may not have happened (docs/audit.md):"]  # fmt: skip
    for c in bad:
        a = c.record.attempt
        reason = (c.unverified or "")[:_MAX_REASON]
        lines.append(printable(f"  {a.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} {a.env} {a.app}: {reason}"))
    lines.append("Check the whole chain with `deployctl audit verify`.")
    return "\n".join(lines)


def render_history(records: Sequence[CheckedRecord], verifications: Mapping[int, Verification], *,
                   by_release: bool = False) -> str:
    """The history for a person: a table (grouped by release), the failed verifications, then the attempts
    whose rows do not verify in the audit chain."""
    if by_release:
        text = render_history_by_release(records, verifications)
    else:
        text = render_table(HISTORY_HEADERS, [history_row(r, verifications) for r in records])
        for v in sorted(verifications.values(), key=lambda v: v.attempt_id):
            if not v.ok:
                text += "\n" + printable(f"attempt {v.attempt_id} ({v.env}/{v.app} {v.sha[:12]}): {v.result}: {v.reason}")
    notes = [n for n in (render_unverified(records), render_untrusted_verifications(verifications)) if n]
    return "\n\n".join([text, *notes])


def render_untrusted_verifications(verifications: Mapping[int, Verification]) -> str:
    """The note on verifications whose rows do not verify in the audit chain, or "" when all do."""
    bad = sorted((v for v in verifications.values() if v.chain_unverified is not None), key=lambda v: v.attempt_id)
    if not bad:
        return ""
    lines = [f"{UNTRUSTED}: {len(bad)} verification(s) above do not verify in the audit chain; they may not have "
             "happened and no gate counts them (docs/audit.md):"]  # fmt: skip
    lines += [printable(f"  attempt {v.attempt_id} ({v.env}/{v.app}): {(v.chain_unverified or '')[:_MAX_REASON]}")
              for v in bad]  # fmt: skip
    lines.append("Check the whole chain with `deployctl audit verify`.")
    return "\n".join(lines)


def render_csv(records: Sequence[CheckedRecord]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*EVENT_FIELDS, *CHAIN_FIELDS], lineterminator="\n")
    writer.writeheader()
    for checked in records:
        event = checked.as_dict()
        event["workloads"] = ";".join(event["workloads"])
        event["reviewers"] = ";".join(event["reviewers"])
        event["pull_request"] = (event["pull_request"] or {}).get("url", "")
        event["approvals"] = ";".join(f"{a['who']} {a['when']} {a['head_sha']}" for a in event["approvals"])
        writer.writerow(event)
    return out.getvalue()


@click.command()
@audit_option
@filter_options
@click.option("--sha", help="Only attempts whose new SHA or release (deploy commit) starts with this.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="0: no limit.")
@click.option("--by-release", is_flag=True, help="Group the table by release (deploy commit).")
@click.option("--id", "attempt_id", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only attempt N, with its rollout events (apply, new ReplicaSet, ready counts, stall, verdict).")
@output_options(TABLE, JSON, YAML, "csv")
def history(
    attempt_id: int | None,
    audit: AuditTarget,
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
      deployctl history --id 42 -o json
    """
    if attempt_id is not None:
        _history_of_one(audit, attempt_id, output)
        return
    store = _read(audit)
    try:
        records = check_records(store, query(store, envs=envs, apps=apps, since=since, until=until, sha=sha,
                                             limit=limit or None))  # fmt: skip
        verifications = latest_verifications(store, [r.record for r in records])
    finally:
        store.close()
    if output.data([with_verification(r.as_dict(), verifications.get(r.record.id)) for r in records]):
        return
    if output.format == "csv":
        output.write(render_csv(records).rstrip("\n"))
    elif not records:
        output.write("No deploy attempts match.")
    else:
        output.write(render_history(records, verifications, by_release=by_release))


def _history_of_one(audit: AuditTarget, attempt_id: int, output: Output) -> None:
    store = _read(audit)
    try:
        record = store.get(attempt_id)
        events_ = store.events_of(attempt_id) if record is not None else []
        checked = check_records(store, [record]) if record is not None else []
    finally:
        store.close()
    if record is None:
        raise InvalidInputError(f"history --id {attempt_id}: no attempt with that id in {store.url}")
    if output.data(checked[0].with_events(events_)):
        return
    if output.format == "csv":
        output.write(render_csv(checked).rstrip("\n"))
        return
    output.write(render_attempt(checked[0], events_))


def render_attempt(checked: CheckedRecord, events_: Sequence[AttemptEvent]) -> str:
    """One attempt for a person: its row of the history, then what happened between apply and verdict."""
    record = checked.record
    text = render_table(HISTORY_HEADERS, [history_row(checked)])
    note = render_unverified([checked])
    if note:
        text += "\n\n" + note
    if record.error:
        text += "\n\n" + printable(f"error: {record.error}")
    if not events_:
        return text + "\n\nNo rollout events recorded (not applied, or recorded by an older deployctl)."
    rows = [[e.at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3], e.kind, e.detail] for e in events_]
    return text + "\n\n" + render_table(("AT (UTC)", "EVENT", "DETAIL"), rows)
