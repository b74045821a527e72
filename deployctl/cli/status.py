"""`deployctl status`: env x app, desired against live, once or refreshed with --watch."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from deployctl.cli.options import selection_options
from deployctl.cli.output import Output, duration_option, render_table, stderr_is_terminal
from deployctl.cli.reconcile import _echo_problems, _observed_plan, _short

HEADERS = ("ENV", "APP", "DESIRED", "LIVE", "IN SYNC", "HEALTH", "DETAIL")


def status_document(repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...], kubeconfig: str | None,
                    context: str | None, allowed_namespaces: tuple[str, ...],
                    audit_url: str | None = None) -> tuple[dict[str, Any], Any]:
    """One observation: the machine-readable document (the table's rows are built from it) and the state."""
    from deployctl.app.status import status_row
    from deployctl.rules.freeze import frozen_environments

    desired, result, refused = _observed_plan(repo, ref, envs, apps, kubeconfig, context, allowed_namespaces)
    docs = [status_row(c) for c in result.changes]
    if audit_url:
        _add_verifications(docs, audit_url)
    frozen = frozen_environments(desired.config, datetime.now(UTC)) if desired.config else {}
    freezes = {env: f.as_dict() for env, f in frozen.items() if env in {c.env for c in result.changes}}
    return {"deploy_commit": desired.commit, "apps": docs, "refused": dict(refused), "freezes": freezes,
            "problems": [p.as_dict() for p in desired.problems]}, desired


def _add_verifications(docs: list[dict[str, Any]], audit_url: str) -> None:
    """Each row's live SHA's latest verification there (result and reason), and its desired SHA's pre-deploy
    Job (name and outcome, ``pre_deploy``), from the audit history."""
    from deployctl.app.status import pre_deploy_steps
    from deployctl.edges.audit.url import open_store

    store = open_store(audit_url, create=False)
    try:
        steps = pre_deploy_steps(store, docs)
        for d in docs:
            step = steps.get((d["env"], d["app"]))
            d["pre_deploy"] = step.as_dict() if step else None
        for d in docs:
            found = store.verifications(env=d["env"], app=d["app"], sha=d["live_sha"], limit=1) if d["live_sha"] else []
            d["verification"] = found[0].result if found else None
            d["verification_reason"] = found[0].reason if found else None
            untrusted = store.unverified_verifications([found[0].id]) if found and found[0].id is not None else {}
            d["verification_chain_verified"] = None if not found else not untrusted  # its row verifies in the chain
    finally:
        store.close()


def _row(d: dict[str, Any]) -> tuple[str, ...]:
    sync = "yes" if d["in_sync"] else d["action"]
    if d.get("suspended"):
        sync = f"{sync} (suspended)" if d["in_sync"] else "suspended"
    detail = d["message"] or ""
    if d.get("verification"):
        verdict = d["verification"] if d["verification"] == "verified" else \
            f"{d['verification']}: {d['verification_reason']}"
        if d.get("verification_chain_verified") is False:
            verdict += " (UNTRUSTED: its audit row does not verify; see deployctl audit verify)"
        detail = f"{verdict}; {detail}" if detail else verdict
    if step := d.get("pre_deploy"):
        ran = f"pre-deploy job/{step['job']}: {step['detail']}"
        if step["chain_verified"] is False:
            ran += " (UNTRUSTED: its attempt's audit rows do not verify; see deployctl audit verify)"
        detail = f"{detail}; {ran}" if detail else ran
    return (d["env"], d["app"], _short(d["desired_sha"]), _short(d["live_sha"]), sync, d["health"], detail)


def render_status(doc: dict[str, Any]) -> str:
    notes = [f"freeze: {f['env']} is frozen until {f['until']} ({f['reason']}; {f['rule']})"
             for f in doc.get("freezes", {}).values()]
    return "\n".join([render_table(HEADERS, [_row(d) for d in doc["apps"]]), *notes])


def changed_lines(before: dict[str, Any] | None, after: dict[str, Any], *, now: datetime) -> list[str]:
    """One line per env/app whose row differs from the last observation (all of them the first time)."""
    old = {(d["env"], d["app"]): _row(d) for d in (before or {}).get("apps", [])}
    stamp = now.strftime("%H:%M:%SZ")
    lines = []
    for d in after["apps"]:
        row = _row(d)
        if old.get((d["env"], d["app"])) != row:
            lines.append(f"{stamp} {d['env']}/{d['app']}: desired {row[2]} live {row[3]} in-sync {row[4]} "
                         f"health {row[5]}{' ' + row[6] if row[6] else ''}")
    return lines


@click.command()
@selection_options
@click.option("--watch", "-w", "watch_", is_flag=True,
              help="Refresh until interrupted: redrawn in place on a terminal, else one line per change.")
@duration_option("--interval", default="5s", help="With --watch: how often to look again")
@click.option("--watch-count", type=int, default=0, hidden=True, help="Stop after N observations (tests).")
@click.option("--audit", "audit_url", default=None, metavar="URL",
              help="Audit store: show whether each live SHA was verified against its metrics there.")
def status(repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...], kubeconfig: str | None,
           context: str | None, allowed_namespaces: tuple[str, ...], output: Output, watch_: bool,
           interval: float, watch_count: int, audit_url: str | None) -> None:
    """A table of env x app: desired SHA, live SHA, in sync or not, rollout health.

    \b
    Example:
      deployctl status --repo .
      deployctl status --env production --watch --interval 10s
    """
    def observe() -> dict[str, Any]:
        return status_document(repo, ref, envs, apps, kubeconfig, context, allowed_namespaces, audit_url)[0]

    if not watch_:
        doc, desired = status_document(repo, ref, envs, apps, kubeconfig, context, allowed_namespaces, audit_url)
        if not output.data(doc):
            _echo_problems(desired)
            output.write(render_status(doc))
        return
    live = output.path is None and not output.is_data and stderr_is_terminal() and sys.stdout.isatty()
    before: dict[str, Any] | None = None
    seen = 0
    try:
        while True:
            doc = observe()
            seen += 1
            if live:
                stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                click.echo("\x1b[H\x1b[2J" + f"every {interval:g}s, {stamp} (Ctrl-C stops)\n\n" + render_status(doc))
            elif doc != before:
                if not output.data(doc):
                    for line in changed_lines(before, doc, now=datetime.now(UTC)):
                        output.write(line)
            before = doc
            if watch_count and seen >= watch_count:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
