"""`deployctl plan`, `deployctl reconcile` and `deployctl status`."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

import click

from deployctl import settings
from deployctl.cli.options import audit_options, selection_options
from deployctl.cli.output import (
    Duration,
    Output,
    duration_option,
    render_table,
)
from deployctl.model.audit_target import AuditTarget
from deployctl.model.printable import printable
from deployctl.model.state import DesiredState
from deployctl.model.vocabulary import AppState, CheckExit, EnvStatus, ExitCode, Result, Trigger
from deployctl.reconcile.observe import ClusterPool
from deployctl.reconcile.options import Locking, Overrides, ReconcileOptions, Selection, Timing
from deployctl.reconcile.ordering import git_relation
from deployctl.reconcile.outcome import Progress, ReconcileResult
from deployctl.rules.plan import Plan

F = TypeVar("F", bound=Callable[..., Any])


def load_desired(repo_path: str, ref: str) -> DesiredState:
    from deployctl.edges.git.repo import read_desired_state

    return read_desired_state(repo_path, ref=ref)


def _echo_problems(desired: DesiredState) -> None:
    for p in desired.problems:
        click.echo(f"{p.severity}: {p}", err=True)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


# -- plan ---------------------------------------------------------------------------------------


def render_plan(plan: Plan) -> str:
    rows = [
        (c.env, c.app, str(c.action), _short(c.old_sha), _short(c.new_sha),
         c.reason or (c.health.message if c.health else ""))
        for c in plan.changes
    ]
    table = render_table(("ENV", "APP", "ACTION", "LIVE SHA", "DESIRED SHA", "DETAIL"), rows)
    summary = ", ".join(f"{n} {a}" for a, n in sorted(plan.counts.items())) or "nothing selected"
    return f"{table}\n\nplan at {_short(plan.deploy_commit)}: {summary}"


def plan_has_changes(plan: Plan) -> bool:
    """Whether the live state differs from the plan's desired state (an update, drift, a missing or blocked
    app); suspended apps are left alone on purpose, so they are no change."""
    from deployctl.rules.plan import Action

    return any(c.action not in (Action.IN_SYNC, Action.SUSPENDED) for c in plan.changes)


exit_code_option = click.option(
    "--exit-code", is_flag=True,
    help="Exit 2 when there are changes, 0 when there are none (1 on errors), for CI.")


@click.command()
@selection_options
@exit_code_option
def plan(repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...], kubeconfig: str | None,
         context: str | None, allowed_namespaces: tuple[str, ...], output: Output, exit_code: bool) -> None:
    """Show what reconcile would do, per env/app, without writing anything.

    Actions: in-sync, update (old SHA -> new SHA), drift (the live image was changed
    behind deployctl's back), missing (no workload labelled deployctl.dev/app=<app>),
    blocked (a dependency is not healthy), invalid.

    \b
    Example:
      deployctl plan --repo . --env staging
      deployctl plan --exit-code -o json   # exit 2 when something would change
    """
    desired, result, refused = _observed_plan(repo, ref, envs, apps, kubeconfig, context, allowed_namespaces)
    doc = result.as_dict()
    doc["problems"] = [p.as_dict() for p in desired.problems]
    doc["refused"] = dict(refused)
    if not output.data(doc):
        _echo_problems(desired)
        for reason in refused.values():
            click.echo(printable(f"refused: {reason}"), err=True)
        output.write(render_plan(result))
    failed = bool(refused) or not desired.ok
    if exit_code:
        sys.exit(CheckExit.PROBLEMS if failed else (CheckExit.CHANGES if plan_has_changes(result) else CheckExit.CLEAN))
    if failed:
        sys.exit(ExitCode.INVALID)


def _observed_plan(repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...], kubeconfig: str | None,
                   context: str | None, allowed_namespaces: tuple[str, ...]
                   ) -> tuple[DesiredState, Plan, Mapping[str, str]]:
    """Read, observe (the same step reconcile takes) and plan, without writing: for plan and status."""
    from deployctl.app.status import observed_plan

    desired = load_desired(repo, ref)
    pool = ClusterPool(kubeconfig=kubeconfig or None, context=context)
    plan, refused = observed_plan(desired, pool, relation=git_relation(repo), envs=envs, apps=apps,
                                  allowed_namespaces=_split_allowed(allowed_namespaces))
    return desired, plan, refused


def _split_allowed(values: tuple[str, ...]) -> list[str]:
    return settings.split_names(values)


# -- reconcile ----------------------------------------------------------------------------------


class ProgressPrinter:
    """Live progress: a redrawn block on a terminal, one line per state change otherwise."""

    def __init__(self, stream: TextIO, *, live: bool, max_lines: int = 15) -> None:
        self.stream = stream
        self.live = live
        self.max_lines = max_lines
        self.states: dict[tuple[str, str], tuple[str, str]] = {}
        self.drawn = 0
        self.lock = threading.Lock()

    def __call__(self, p: Progress) -> None:
        with self.lock:
            if not self.live:
                stamp = datetime.now(UTC).strftime("%H:%M:%SZ")
                msg = f" {p.message}" if p.message else ""
                self.stream.write(f"{stamp} {p.env}/{p.app}: {p.state}{msg}\n")
                self.stream.flush()
                return
            self.states[(p.env, p.app)] = (p.state, p.message)
            self._draw()

    def _draw(self) -> None:
        active = [(k, v) for k, v in self.states.items() if v[0] in _IN_FLIGHT]
        done = [(k, v) for k, v in self.states.items() if v[0] not in _IN_FLIGHT]
        counts: dict[str, int] = {}
        for _, (state, _) in self.states.items():
            counts[state] = counts.get(state, 0) + 1
        lines = [printable(f"{k[0]}/{k[1]}: {s} {m}")[:120]
                 for k, (s, m) in (done[-5:] + active)[-self.max_lines:]]
        lines.append("  ".join(f"{s}: {n}" for s, n in sorted(counts.items())))
        out = ""
        if self.drawn:
            out += f"\x1b[{self.drawn}F"
        out += "".join(f"\x1b[2K{line}\n" for line in lines)
        if len(lines) < self.drawn:
            out += "".join("\x1b[2K\n" for _ in range(self.drawn - len(lines)))
            out += f"\x1b[{self.drawn - len(lines)}F"
        self.stream.write(out)
        self.stream.flush()
        self.drawn = len(lines)


_IN_FLIGHT = {str(s) for s in AppState if s.in_flight}


def render_result(result: ReconcileResult) -> str:
    rows = [
        (o.env, o.app, o.result, _short(o.old_sha), _short(o.new_sha),
         f"{o.seconds:.1f}s" if o.seconds is not None and o.result.timed else "",
         o.message)
        for o in result.outcomes
    ]
    table = render_table(("ENV", "APP", "RESULT", "FROM", "TO", "TIME", "DETAIL"), rows)
    summary = _counted(result.tally()) or "nothing selected"
    if result.problems:
        summary += f", {len(result.problems)} invalid-input error{'s' if len(result.problems) > 1 else ''}"
    envs = "".join(f"\nenvironment {e.env}: {e.status}" + (f": {e.message}" if e.message else _env_counts(result, e.env))
                   for e in result.environments if len(result.environments) > 1 or e.status is not EnvStatus.OK)
    invalid = "".join(f"\ninvalid: {p}" for p in result.problems)  # a Problem prints safely
    return (
        f"{table}\n{envs}{invalid}\nreconciled {_short(result.plan.deploy_commit)} in {result.seconds:.1f}s: {summary} "
        f"(exit {int(result.exit_code)})"
    )


def _counted(tally: Mapping[Result, int]) -> str:
    return ", ".join(f"{n} {r}" for r, n in sorted(tally.items()))


def _env_counts(result: ReconcileResult, env: str) -> str:
    counts = _counted(result.tally(env))
    return f" ({counts})" if counts else ""


def _default_trigger() -> str:
    return Trigger.CI if os.environ.get("CI") else Trigger.MANUAL


@click.command()
@selection_options
@duration_option("--timeout", default="5m", help="How long to wait for all rollouts")
@click.option("--no-wait", is_flag=True, help="Apply and return without waiting for rollouts "
              "(dependents are then applied right after their dependencies).")
@click.option("--concurrency", default=16, show_default=True, help="Applies in flight at once.")
@audit_options()
@click.option("--trigger", type=click.Choice([str(t) for t in Trigger]), default=None,
              help="Why this run happens, for the audit history [default: ci when $CI is set, else manual].")
@click.option("--allow-retagged", is_flag=True,
              help="Apply even when a tag now points to a different digest than the one tested in the "
              "environments this one requires.")
@click.option("--override-freeze", is_flag=True,
              help="Apply even in a freeze window (needs --reason; the override is logged and audited).")
@click.option("--reason", "override_reason", default=None, metavar="TEXT", help="Why the freeze is overridden.")
@click.option("--lock-timeout", type=Duration(), default=None, metavar="DURATION",
              help="How long an app waits for its lock while another run writes it [default: --timeout].")
@click.option("--lock-lease", type=Duration(), default="15s", show_default=True, metavar="DURATION", hidden=True,
              help="How long an app lock outlives a run that died holding it.")
@click.option("--force-older", is_flag=True, help="Emergency: apply even when the live deploy commit is newer "
              "(recorded in the audit history). To roll back, prefer `deployctl rollback`.")
@click.option("--allow-non-descendant", is_flag=True,
              help="Apply a commit that is neither an ancestor nor a descendant of the live one (force-push).")
@click.option("--verify", "verify_after", is_flag=True,
              help="After the rollouts, verify each one that has verify checks on $DEPLOYCTL_PROMETHEUS_URL and "
              "wait for the verdicts (exit 1 when one fails).")
def reconcile(repo: str, ref: str, envs: tuple[str, ...], apps: tuple[str, ...], kubeconfig: str | None,
              context: str | None, allowed_namespaces: tuple[str, ...], output: Output, timeout: float,
              no_wait: bool, concurrency: int, audit: AuditTarget,
              trigger: str | None, allow_retagged: bool, override_freeze: bool,
              override_reason: str | None, lock_timeout: float | None, lock_lease: float, force_older: bool,
              allow_non_descendant: bool, verify_after: bool) -> None:
    """Apply the deploy files at REF to the cluster and wait for the rollouts.

    Each app's workloads (Deployments, StatefulSets, DaemonSets and CronJobs labelled deployctl.dev/app=<app> in
    the environment's namespace) get the image of the SHA in its deploy file, in depends_on
    order, one run per environment at a time (a lock in the cluster). An app whose live deploy
    commit is newer is skipped. Exit codes: 0 all in sync, updated and healthy, or skipped; 1 a
    rollout failed, an app is blocked or has no workload; 2 invalid input, a refused namespace or a
    commit that does not descend from the live one (nothing applied for it); 3 an environment's
    cluster cannot be reached (the other environments were still reconciled).

    \b
    Example (what CI runs on merge):
      deployctl reconcile --repo . --ref origin/main --timeout 10m
      deployctl reconcile --env production --override-freeze --reason "INC-42 hotfix"
    """
    if override_freeze and not (override_reason or "").strip():
        raise click.UsageError("--override-freeze needs --reason TEXT (it goes into the audit history)")
    from deployctl.app.run import Callbacks, run_reconcile

    prometheus = None
    if verify_after:
        from deployctl.app.verify import prometheus_from_settings

        prometheus = prometheus_from_settings()
        if prometheus is None:
            raise click.UsageError("--verify needs DEPLOYCTL_PROMETHEUS_URL (the Prometheus that verifies deploys)")
        if audit.off:
            raise click.UsageError("--verify records its results in the audit history; drop --no-audit")
    options = ReconcileOptions(
        selection=Selection(envs=envs, apps=apps, allowed_namespaces=tuple(_split_allowed(allowed_namespaces))),
        overrides=Overrides(allow_retagged=allow_retagged, override_freeze=override_freeze,
                            override_reason=override_reason, force_older=force_older,
                            allow_non_descendant=allow_non_descendant),
        timing=Timing(wait=not no_wait, timeout=timeout, concurrency=concurrency),
        locking=Locking(timeout=lock_timeout, lease=lock_lease),
    )
    progress = not output.is_data
    read: list[DesiredState] = []  # the state reconciled: --verify reads its checks

    def on_read(desired: DesiredState) -> None:
        read.append(desired)
        if progress:
            _echo_problems(desired)

    result = run_reconcile(
        repo=repo, ref=ref, options=options, kubeconfig=kubeconfig or None, context=context,
        audit=audit, trigger=trigger or _default_trigger(),
        callbacks=Callbacks(
            on_read=on_read,
            on_progress=ProgressPrinter(sys.stderr, live=sys.stderr.isatty()) if progress else None,
            on_wait=lambda line: click.echo(line, err=True),
        ),
    )
    if prometheus is None:
        if not output.data(result.as_dict()):
            output.write(render_result(result))
        sys.exit(result.exit_code)
    from deployctl.app.verify import VerifyRun, verify_reconciled
    from deployctl.cli.verify import render_reports
    from deployctl.edges.audit.url import open_target

    store = open_target(audit)
    assert store is not None  # --verify with --no-audit was refused above
    try:
        reports = verify_reconciled(result, read[0], VerifyRun(prometheus, store, trigger=trigger or _default_trigger()),
                                    clusters=ClusterPool(kubeconfig=kubeconfig or None, context=context), repo=repo)
    finally:
        store.close()
    failed = any(not r.verification.ok for r in reports)
    if not output.data({**result.as_dict(), "verifications": [r.as_dict() for r in reports]}):
        output.write(render_result(result))
        if reports:
            output.write(render_reports(reports))
    sys.exit(max(result.exit_code, ExitCode.FAILED if failed else ExitCode.OK))
