"""`deployctl validate`: check the deploy files and deployctl.yaml at a ref (or in the work tree)."""

from __future__ import annotations

import click

from deployctl.cli.completion import complete_ref
from deployctl.cli.options import repo_option
from deployctl.cli.output import JSON, TABLE, YAML, Output, output_options
from deployctl.edges.git.repo import read_desired_state
from deployctl.model.printable import printable
from deployctl.model.state import DesiredState
from deployctl.model.vocabulary import CheckExit


def render_text(state: DesiredState) -> list[str]:
    """Every problem as ``path:line: message`` (warnings marked), then a one-line summary."""
    lines = [str(p) if p.is_error else f"{p}  (warning)" for p in state.problems]
    where = "the work tree" if state.commit is None else state.commit[:12]
    errors, warnings = len(state.errors), len(state.warnings)
    envs = state.environments()
    if errors:
        summary = f"{errors} error{'s' * (errors != 1)}"
        if warnings:
            summary += f", {warnings} warning{'s' * (warnings != 1)}"
        lines.append(f"{summary} at {where} ({state.ref}); fix them and run deployctl validate again")
    else:
        note = f" ({warnings} warning{'s' * (warnings != 1)})" if warnings else ""
        lines.append(
            f"ok: {len(state.targets)} target{'s' * (len(state.targets) != 1)} in {len(envs)} "
            f"environment{'s' * (len(envs) != 1)} at {where}{note}"
        )
    return [printable(line) for line in lines]


def with_schema_problems(repo: str, state: DesiredState, *, ref: str, worktree: bool) -> DesiredState:
    """The state with deployctl.yaml also checked against the JSON Schema (only when the loader found no
    error in it: the schema is a cross-check that editors and validate agree, not a second report)."""
    from dataclasses import replace
    from pathlib import Path

    from deployctl.edges.git.history import read_file_at
    from deployctl.edges.git.repo import repo_root
    from deployctl.model.config import CONFIG_PATH, MAX_CONFIG_BYTES
    from deployctl.model.config.schema import schema_problems

    if state.config is None or any(p.is_error and p.path == CONFIG_PATH for p in state.problems):
        return state
    if worktree:
        from deployctl.edges.git.repo import open_repository

        path = Path(repo_root(open_repository(repo))) / CONFIG_PATH
        data: bytes | None = path.read_bytes()[: MAX_CONFIG_BYTES + 1] if path.is_file() else None
    else:
        data = read_file_at(repo, CONFIG_PATH, ref=ref)
    if data is None:
        return state
    extra = schema_problems(data)
    return replace(state, problems=state.problems + tuple(extra)) if extra else state


@click.command()
@repo_option
@click.option("--ref", default=None, shell_complete=complete_ref, help="Branch, tag or commit to read (default: HEAD).")
@click.option(
    "--worktree", is_flag=True, help="Read the files on disk instead of a commit (before committing)."
)
@click.option(
    "--gates/--no-gates",
    default=True,
    show_default=True,
    help="Check promotion gates (requires:) against the required environments' deploy-file history.",
)
@click.option("--check-images", is_flag=True,
              help="Also check that every target's image exists in its registry (one request per image).")
@click.option("--strict", is_flag=True, help="With --check-images: an unreachable registry is an error, not a warning.")
@click.option("--audit", "audit_url", default=None, metavar="URL",
              help="Audit store whose verification results the require_verified gates read [default: none; "
              "such a gate then fails saying so].")
@output_options(TABLE, JSON, YAML)
def validate(repo: str, ref: str | None, worktree: bool, gates: bool, check_images: bool, strict: bool,
             audit_url: str | None, output: Output) -> None:
    """Check deployctl.yaml and every environments/<env>/<app>.deploy file.

    Reports every problem at once as path:line: message, exits 1 if there is any error and
    0 when the repo is clean (warnings do not fail).

    \b
    Example:
      deployctl validate --repo . --ref origin/main
      deployctl validate --worktree -o json
      deployctl validate --check-images --strict
    """
    if ref is not None and worktree:
        raise click.UsageError("give either --ref or --worktree, not both")
    state = read_desired_state(repo, ref=ref or "HEAD", worktree=worktree)
    if check_images:
        from deployctl.edges.registry.client import RegistryClient
        from deployctl.reconcile.artifacts import check_images as check

        with RegistryClient() as client:
            state = check(state, client, strict=strict)
    state = with_schema_problems(repo, state, ref=ref or "HEAD", worktree=worktree)
    if gates:
        from deployctl.reconcile.policy import with_gate_problems

        if audit_url:
            from deployctl.edges.audit.url import open_store

            store = open_store(audit_url, create=False)
            try:
                state = with_gate_problems(repo, state, verification_store=store)
            finally:
                store.close()
        else:
            state = with_gate_problems(repo, state)
    if not output.data(state.as_dict()):
        output.lines(render_text(state))
    if not state.ok:
        click.get_current_context().exit(CheckExit.PROBLEMS)
