"""`deployctl init`: start a deploy repo in an empty or existing directory."""

from __future__ import annotations

from pathlib import Path

import click

from deployctl.cli.output import JSON, TABLE, YAML, Output, output_options
from deployctl.settings import split_names


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False))
@click.option("--env", "envs", multiple=True, metavar="ENV",
              help="An environment, in promotion order (repeatable or comma-separated) [default: staging,production].")
@click.option("--namespace", "namespaces", multiple=True, metavar="ENV=NS",
              help="The Kubernetes namespace of an environment (repeatable) [default: the environment's name].")
@click.option("--app", "apps", multiple=True, metavar="APP", help="An app (repeatable or comma-separated).")
@click.option("--registry", default="registry.example.com/shop", show_default=True,
              help="Image repository prefix: each app's image is REGISTRY/<app>.")
@click.option("--approver", "approvers", multiple=True, metavar="WHO",
              help="@user, @org/team or email who reviews changes to the last environment (repeatable).")
@click.option("--ci", type=click.Choice(["github", "gitlab", "gitea"]), default=None,
              help="Also write the CI workflow (and CODEOWNERS in that forge's syntax).")
@click.option("--force", is_flag=True, help="Overwrite files that exist with other content.")
@output_options(TABLE, JSON, YAML)
def init(directory: str, envs: tuple[str, ...], namespaces: tuple[str, ...], apps: tuple[str, ...], registry: str,
         approvers: tuple[str, ...], ci: str | None, force: bool, output: Output) -> None:
    """Scaffold a deploy repo: deployctl.yaml, environments/<env>/, CODEOWNERS and CI.

    deployctl.yaml gets every default as a comment and a $schema line, so editors with the
    YAML language server validate and complete it. Existing files are never overwritten
    without --force (and then nothing is written at all). A directory that is not a git
    repository yet becomes one.

    \b
    Example:
      deployctl init --env staging --env production --namespace staging=shop-staging \\
          --app checkout --ci github --approver @shop/release
    """
    from deployctl.app.scaffold import plan_scaffold, write_scaffold
    from deployctl.edges.git.repo import ensure_repository

    env_names = split_names(envs) or ["staging", "production"]
    by_env: dict[str, str] = {}
    for item in split_names(namespaces):
        env, sep, ns = item.partition("=")
        if not sep or not env or not ns:
            raise click.BadParameter(f"{item!r}: write ENV=NAMESPACE, e.g. staging=shop-staging",
                                     param_hint="'--namespace'")
        by_env[env] = ns
    scaffold = plan_scaffold(envs=env_names, apps=split_names(apps), registry=registry.rstrip("/"),
                             approvers=split_names(approvers), ci=ci, repo_arg=directory, namespaces=by_env)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written = write_scaffold(root, scaffold, force=force)
    created = ensure_repository(root)
    doc = {"directory": str(root), "git_init": created, "written": written,
           "unchanged": sorted(set(scaffold.files) - set(written)), "next": list(scaffold.next_commands)}
    if output.data(doc):
        return
    lines = [f"initialised a git repository in {root}"] if created else []
    lines += [f"wrote {rel}" for rel in written] or ["nothing to write: every file is already there"]
    lines += ["", "Next:"] + [f"  {command}" for command in scaffold.next_commands]
    output.lines(lines)
