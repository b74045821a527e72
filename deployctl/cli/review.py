"""`deployctl diff`, `promote`, `rollback` and `codeowners`: the pull-request side of deploying."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click

from deployctl.app.diff import build_diff, publish_diff
from deployctl.app.promote import (
    RollbackChoice,
    promote_apps,
    promote_branch,
    promotion_change,
    propose,
    rollback_app,
    rollback_change,
    workdir,
)
from deployctl.cli.options import audit_options, repo_option
from deployctl.cli.output import (
    JSON,
    MARKDOWN,
    TABLE,
    YAML,
    Output,
    output_options,
    render_table,
)
from deployctl.edges.forge import ForgeError, ForgeSettings
from deployctl.edges.git import repo as repo_edge
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.audit_target import AUDIT_OFF, AuditTarget
from deployctl.model.printable import printable
from deployctl.model.vocabulary import CheckExit
from deployctl.rules import codeowners as co
from deployctl.rules import diff as df
from deployctl.rules.freeze import ActiveFreeze, frozen_environments


class CodeownersOutOfDateError(DeployctlError):
    """The CODEOWNERS file does not match the approvers in deployctl.yaml."""


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


# -- diff -------------------------------------------------------------------------------------------


def _approval(t: df.TargetDiff) -> str:
    return ", ".join(t.approvers) if t.needs_approval and t.approvers else ("required" if t.needs_approval else "-")


def _gates(t: df.TargetDiff) -> str:
    if not t.gates:
        return "-"
    failed = [g.required for g in t.gates if not g.passed]
    if failed:
        return "FAILED: " + ", ".join(failed)
    return "ok: " + ", ".join(g.required for g in t.gates)


def render_diff_text(d: df.StateDiff) -> list[str]:
    """A table of changed targets, then per target its image, commits and warnings, then problems."""
    lines: list[str] = []
    if d.targets:
        rows = [(t.env, t.app, t.status, _short(t.old_sha), _short(t.new_sha), _approval(t), _gates(t))
                for t in d.targets]
        lines += render_table(("ENV", "APP", "CHANGE", "OLD", "NEW", "APPROVAL", "GATES"), rows).splitlines()
    for t in d.targets:
        lines.append("")
        lines.append(f"{t.env}/{t.app} ({t.path}:{t.line})")
        if t.new_image:
            lines.append(f"  image: {t.new_image}")
        if t.commits is not None:
            more = "+" if t.commits.truncated else ""
            lines.append(f"  commits {_short(t.old_sha)}..{_short(t.new_sha)} ({len(t.commits.commits)}{more}):")
            lines += [f"    {c.sha[:12]} {c.author}: {c.summary}" for c in t.commits.commits]
        lines += [f"  warning: {w}" for w in t.warnings]
    problems = [p for p in d.problems if p.is_error]
    warnings = [p for p in d.problems if not p.is_error and p.path.startswith("environments/")
                and (p.env, p.app) in {t.key for t in d.targets}]
    if problems or warnings:
        lines.append("")
        lines += [f"error: {p}" for p in problems]
        lines += [f"warning: {p}" for p in warnings]
    n = len(d.targets)
    head = f"{n} change{'s' * (n != 1)} from {d.base_ref} ({_short(d.base_commit)}) to {d.head_ref} " \
           f"({_short(d.head_commit)})"
    if problems:
        lines.append(f"{head}: {len(problems)} error{'s' * (len(problems) != 1)}; fix before merging")
    else:
        lines.append(f"{head}: ok")
    return [printable(line) for line in lines]


def _md(text: str) -> str:
    """Text safe inside a markdown table cell, list item or code span: no HTML, no table break, no
    control characters, no backtick to end a code span."""
    return printable(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
                     .replace("\n", " ")).replace("`", "\\x60")


def render_diff_markdown(d: df.StateDiff) -> list[str]:
    """A PR comment: a compact table first, errors next, the details of each target folded."""
    lines = [f"### deployctl diff: `{_md(d.base_ref)}` → `{_md(d.head_ref)}`", ""]
    if not d.targets:
        lines.append("No deploy changes.")
    else:
        lines += ["| Env | App | Change | From | To | Approval | Gates |", "|---|---|---|---|---|---|---|"]
        for t in d.targets:
            gates = _gates(t)
            mark = "❌ " if gates.startswith("FAILED") else ("✅ " if gates.startswith("ok") else "")
            lines.append(
                f"| {t.env} | {t.app} | {t.status} | `{_short(t.old_sha)}` | `{_short(t.new_sha)}` | "
                f"{_md(_approval(t))} | {mark}{_md(gates)} |"
            )
    problems = [p for p in d.problems if p.is_error]
    if problems:
        lines += ["", f"**{len(problems)} error{'s' * (len(problems) != 1)}**: fix before merging", ""]
        lines += [f"- `{_md(p.path)}{'' if p.line is None else f':{p.line}'}`: {_md(p.message)}" for p in problems]
    for t in d.targets:
        count = f", {len(t.commits.commits)}{'+' if t.commits.truncated else ''} commits" if t.commits else ""
        warn = " ⚠️" if t.warnings else ""
        lines += ["", f"<details><summary>{t.env}/{t.app}: {_short(t.old_sha)} → {_short(t.new_sha)}"
                      f"{count}{warn}</summary>", ""]
        lines.append(f"- deploy file: `{_md(t.path)}:{t.line}`")
        if t.new_image:
            lines.append(f"- image: `{_md(t.new_image)}`")
        lines += [f"- ⚠️ {_md(w)}" for w in t.warnings]
        if t.commits is not None:
            lines += [f"- `{c.sha[:12]}` {_md(c.summary)} ({_md(c.author)})" for c in t.commits.commits]
        lines += ["", "</details>"]
    return lines


@click.command()
@repo_option
@click.option("--base", required=True, help="The ref the pull request merges into (e.g. origin/main).")
@click.option("--head", default="HEAD", show_default=True, help="The pull request's ref.")
@audit_options(record=False, default=AUDIT_OFF,
               help="Check promotion gates against this audit store [default: the deploy files' git history].")
@click.option("--check-images", is_flag=True,
              help="Check that every changed target's image exists in its registry (one request per image).")
@click.option("--strict", is_flag=True, help="With --check-images: an unreachable registry is an error.")
@output_options(TABLE, JSON, YAML, MARKDOWN)
@click.option("--exit-code", is_flag=True, help="Exit 2 when there are deploy changes, 0 when there are none "
              "(1 on errors), like git diff --exit-code.")
@click.option("--comment", "comment_on", type=click.IntRange(min=1), default=None, metavar="PR",
              help="Post the markdown diff as one comment on pull request PR (updated on later runs) and set the "
              "commit status deployctl/plan of the head (the forge settings, docs/review.md).")
def diff(repo: str, base: str, head: str, audit: AuditTarget, check_images: bool, strict: bool,
         output: Output, exit_code: bool, comment_on: int | None) -> None:
    """Show what a change to the deploy repo deploys, without a cluster.

    Per env/app: old and new SHA, image, who must approve, promotion gate results and, when
    the app's source repo is on this disk, the commits in between (with a warning when the new
    SHA does not descend from the old one). Exits 1 when the head has errors or a gate fails.
    --output markdown is a ready pull-request comment.

    \b
    Example:
      deployctl diff --base origin/main --head HEAD -o markdown > comment.md
      deployctl diff --base origin/main --check-images
      deployctl diff --base origin/main --exit-code -o json --out diff.json
      deployctl diff --base origin/main --comment 42
    """
    result = build_diff(repo, base, head, audit=audit, check_images=check_images, strict=strict)
    frozen = _freezes(repo, head, {t.env for t in result.targets})
    if comment_on is not None:
        forge = ForgeSettings.from_env()
        if forge is None:
            raise ForgeError("--comment needs the forge: set DEPLOYCTL_FORGE_TYPE, DEPLOYCTL_FORGE_URL, "
                             "DEPLOYCTL_FORGE_REPO and DEPLOYCTL_FORGE_TOKEN")
        markdown = [*render_diff_markdown(result), *(f"- freeze: {f.notice()}" for f in frozen.values())]
        where = publish_diff(result, "\n".join(markdown) + "\n", number=comment_on, forge=forge)
        click.echo(f"commented on pull request #{comment_on}: {where}", err=True)
    if not output.data({**result.as_dict(), "freezes": {env: f.as_dict() for env, f in frozen.items()}}):
        lines = (render_diff_markdown if output.format == MARKDOWN else render_diff_text)(result)
        output.lines([*lines, *(f"{'- ' if output.format == MARKDOWN else ''}freeze: {f.notice()}"
                                for f in frozen.values())])
    if not result.ok:
        click.get_current_context().exit(CheckExit.PROBLEMS)
    if exit_code and result.targets:
        click.get_current_context().exit(CheckExit.CHANGES)


def _freezes(repo: str, head: str, envs: set[str]) -> dict[str, ActiveFreeze]:
    """The freezes covering the changed environments now (head's deployctl.yaml): when each one ends."""
    config = repo_edge.read_desired_state(repo, ref=head).config
    if config is None or not envs:
        return {}
    return {env: f for env, f in frozen_environments(config, datetime.now(UTC)).items() if env in envs}


# -- promote and rollback ---------------------------------------------------------------------------

open_pr_option = click.option(
    "--open-pr", is_flag=True,
    help="Push the change to a branch and open a pull request on the forge (DEPLOYCTL_FORGE_TYPE, _URL, _REPO, _TOKEN) whose body is "
         "the diff; a second run updates the one already open.")


def _proposed(repo: str, files: dict[str, bytes], text: str, branch: str, changes: list[dict[str, object]],
              output: Output) -> None:
    forge = ForgeSettings.from_env()
    if forge is None:
        raise ForgeError("--open-pr needs the forge: set DEPLOYCTL_FORGE_TYPE, DEPLOYCTL_FORGE_URL, "
                         "DEPLOYCTL_FORGE_REPO and DEPLOYCTL_FORGE_TOKEN")

    def body(base: str, head: str) -> str:
        return "\n".join(render_diff_markdown(build_diff(repo, base, head))) + "\n"

    opened = propose(repo, files, message=text, branch=branch, forge=forge, body=body)
    if output.data({"changes": changes, "branch": branch, "pull_request": asdict(opened)}):
        return
    output.write(f"{'opened' if opened.created else 'updated'} pull request #{opened.number}: {opened.url} "
                 f"(branch {branch})")


@click.command()
@click.argument("app", required=False)
@click.option("--from", "from_env", required=True, metavar="ENV", help="Environment whose SHA is promoted.")
@click.option("--to", "to_env", required=True, metavar="ENV", help="Environment whose deploy file is written.")
@repo_option
@click.option("--message", "-m", default=None, help="Added to the note line and the commit message.")
@click.option("--commit", is_flag=True, help="Commit the change on the current branch.")
@click.option("--all", "all_apps", is_flag=True, help="Promote every app whose SHA differs.")
@open_pr_option
@output_options(TABLE, JSON, YAML)
def promote(app: str | None, from_env: str, to_env: str, repo: str, message: str | None, commit: bool,
            all_apps: bool, open_pr: bool, output: Output) -> None:
    """Write the SHA APP runs in --from at the top of its deploy file in --to.

    A note line (who, when, from where) goes under it and the file's history stays below. The
    work tree is changed; --commit also commits it on the current branch.

    \b
    Example:
      deployctl promote web --from staging --to production --commit -m "Checkout fix"
      deployctl promote --all --from staging --to production
      deployctl promote web --from staging --to production --open-pr
    """
    if all_apps == (app is not None):
        raise click.UsageError("give an APP or --all (not both)")
    if open_pr:
        if commit:
            raise click.UsageError("give --commit or --open-pr, not both")
        apps = None if all_apps else [app or ""]
        done, files, text = promotion_change(repo, apps, from_env=from_env, to_env=to_env, message=message)
        if not done:
            output.write(f"nothing to promote: every app in {to_env} already runs what {from_env} runs")
            return
        _proposed(repo, files, text, promote_branch(to_env, apps), [asdict(p) for p in done], output)
        return
    done, sha = promote_apps(repo, None if all_apps else [app or ""], from_env=from_env, to_env=to_env,
                             message=message, commit=commit)
    if output.data({"from": from_env, "to": to_env, "promoted": [asdict(p) for p in done], "commit": sha}):
        return
    if not done:
        output.write(f"nothing to promote: every app in {to_env} already runs what {from_env} runs")
        return
    for p in done:
        output.write(f"promoted {p.app} to {p.env}: {_short(p.old_sha)} -> {p.new_sha[:12]} ({p.path})")
    if sha is not None:
        output.write(f"committed {sha[:12]}")


@click.command()
@click.argument("app")
@click.option("--env", required=True, help="The environment to roll back.")
@click.option("--to", "to_sha", default=None, metavar="SHA", help="The earlier SHA (full or a unique prefix).")
@click.option("--steps", type=int, default=None, help="Go back N distinct SHAs in the file's history [default: 1].")
@click.option("--force", is_flag=True, help="Allow a SHA that never ran in this environment.")
@repo_option
@click.option("--message", "-m", default=None, help="Why; added to the note line and the commit message.")
@click.option("--commit", is_flag=True, help="Commit the change on the current branch.")
@open_pr_option
@output_options(TABLE, JSON, YAML)
def rollback(app: str, env: str, to_sha: str | None, steps: int | None, force: bool, repo: str,
             message: str | None, commit: bool, open_pr: bool, output: Output) -> None:
    """Roll APP in --env forward to an earlier SHA.

    The earlier SHA is prepended with a note, like any deploy; history is never rewritten. A SHA
    that never ran in the environment (not in the file's history nor its git history) is refused
    unless --force.

    \b
    Example:
      deployctl rollback web --env production --commit -m "500s on checkout"
      deployctl rollback web --env production --to dc4f7d806af0
    """
    if to_sha is not None and steps is not None:
        raise click.UsageError("give either --to or --steps, not both")
    choice = RollbackChoice(to=to_sha, steps=steps, force=force)
    if open_pr:
        if commit:
            raise click.UsageError("give --commit or --open-pr, not both")
        one, files, text = rollback_change(repo, app, env=env, choice=choice, message=message)
        _proposed(repo, files, text, f"deployctl/rollback-{env}-{app}", [asdict(one)], output)
        return
    done, sha = rollback_app(repo, app, env=env, choice=choice, message=message, commit=commit)
    if output.data({"rolled_back": asdict(done), "commit": sha}):
        return
    output.write(f"rolled back {app} in {env}: {_short(done.old_sha)} -> {done.new_sha[:12]} ({done.path})")
    if sha is not None:
        output.write(f"committed {sha[:12]}")


# -- codeowners -------------------------------------------------------------------------------------


def _codeowners_file(root: Path, fmt: str, given: str | None) -> Path:
    if given:
        return root / given
    for candidate in co.CANDIDATE_PATHS[fmt]:
        if (root / candidate).exists():
            return root / candidate
    return root / co.DEFAULT_PATHS[fmt]


@click.command()
@repo_option
@click.option("--check", "mode", flag_value="check", help="Exit 1 when CODEOWNERS is out of date.")
@click.option("--write", "mode", flag_value="write", help="Write the entries into CODEOWNERS.")
@click.option("--format", "fmt", type=click.Choice(list(co.FORMATS)), default=co.GITHUB, show_default=True,
              help="GitHub or GitLab CODEOWNERS syntax.")
@click.option("--file", "file_", default=None,
              help="CODEOWNERS path in the repo [default: the existing one, else .github/ or .gitlab/CODEOWNERS].")
@output_options(TABLE, JSON, YAML)
def codeowners(repo: str, mode: str | None, fmt: str, file_: str | None, output: Output) -> None:
    """Generate CODEOWNERS entries from each environment's approvers in deployctl.yaml.

    Changes to environments/<env>/ (and to deployctl.yaml) then need a review from those
    approvers. Without options the entries are printed; --write puts them between marker
    comments in the file (the rest is kept); --check fails CI when the file is stale.

    \b
    Example:
      deployctl codeowners --write
      deployctl codeowners --check --format gitlab
    """
    root = workdir(repo)
    state = repo_edge.read_desired_state(repo, worktree=True)
    if state.config is None:
        raise InvalidInputError("deployctl.yaml is missing or invalid; run deployctl validate --worktree")
    block = co.render_block(state.config, fmt)
    doc: dict[str, object] = {"format": fmt, "entries": [asdict(e) for e in co.entries(state.config)],
                              "block": block}
    if mode is None:
        if not output.data(doc):
            output.write(block.rstrip("\n"))
        return
    path = _codeowners_file(root, fmt, file_)
    rel = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8") if path.exists() else None
    doc["file"] = rel
    if mode == "check":
        if not co.is_current(text, state.config, fmt):
            why = "does not exist" if text is None else "is out of date with deployctl.yaml"
            raise CodeownersOutOfDateError(f"{rel} {why}; run deployctl codeowners --write and commit it")
        if not output.data({**doc, "current": True}):
            output.write(f"ok: {rel} matches deployctl.yaml")
        return
    new = co.replace_block(text or "", block)
    doc["written"] = new != text
    if new != text:
        repo_edge.write_worktree_files(repo, {rel: new.encode()})
    if output.data(doc):
        return
    n = len(co.entries(state.config))
    output.write(f"{rel} is up to date" if new == text else f"wrote {rel} ({n} entr{'ies' if n != 1 else 'y'})")
