"""The command line: a thin shell over the library.

Commands live in one module per area (``deployctl/cli/<area>.py``) and are imported lazily,
so ``deployctl validate`` does not pay for importing the Kubernetes client. Errors are mapped
to messages and exit codes here, in one place (:class:`DeployctlGroup`).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from deployctl import __version__, settings
from deployctl.errors import DeployctlError

# command name -> "module:attribute". A module that does not exist yet is simply not listed.
COMMANDS: dict[str, str] = {
    "completion": "deployctl.cli.completion:completion",
    "init": "deployctl.cli.init:init",
    "localcluster": "deployctl.cli.localcluster:localcluster",
    "validate": "deployctl.cli.validate:validate",
    "schema": "deployctl.cli.schema:schema",
    "plan": "deployctl.cli.reconcile:plan",
    "reconcile": "deployctl.cli.reconcile:reconcile",
    "status": "deployctl.cli.status:status",
    "audit": "deployctl.cli.audit:audit",
    "history": "deployctl.cli.history:history",
    "events": "deployctl.cli.audit:events",
    "notify": "deployctl.cli.notify:notify",
    "timeline": "deployctl.cli.timeline:timeline",
    "diff": "deployctl.cli.review:diff",
    "promote": "deployctl.cli.review:promote",
    "rollback": "deployctl.cli.review:rollback",
    "codeowners": "deployctl.cli.review:codeowners",
    "watch": "deployctl.cli.watch:watch",
    "suspend": "deployctl.cli.suspend:suspend",
    "resume": "deployctl.cli.suspend:resume",
    "ui": "deployctl.cli.ui:ui",
    "verify": "deployctl.cli.verify:verify",
}

# command name -> its one-line help, so that `deployctl --help` lists the commands without importing
# them (the Kubernetes client, aiohttp, plotly...). tests/unit/test_cli_help.py keeps it equal to
# each command's own short help.
SUMMARIES: dict[str, str] = {
    "audit": "The audit store itself.",
    "completion": "Print the shell completion script for SHELL (bash, zsh or fish).",
    "init": "Scaffold a deploy repo: deployctl.yaml, environments/<env>/, CODEOWNERS and CI.",
    "resume": "Let reconcile and watch manage the workloads `suspend` set aside again.",
    "schema": "Print the JSON Schema of deployctl.yaml (generated from the config model).",
    "suspend": "Make reconcile and watch leave the workloads of --env (and --app) alone until `resume`.",
    "ui": "Serve the read-only dashboard: environments x apps, app pages, timeline, audit records.",
    "codeowners": "Generate CODEOWNERS entries from each environment's approvers in deployctl.yaml.",
    "diff": "Show what a change to the deploy repo deploys, without a cluster.",
    "events": "Deploy attempts as events for other systems.",
    "history": "Every deploy attempt on record, newest first.",
    "localcluster": "Run a local control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok.",
    "notify": "Deploy notifications (webhook, Slack) from the audit outbox.",
    "plan": "Show what reconcile would do, per env/app, without writing anything.",
    "promote": "Write the SHA APP runs in --from at the top of its deploy file in --to.",
    "reconcile": "Apply the deploy files at REF to the cluster and wait for the rollouts.",
    "rollback": "Roll APP in --env forward to an earlier SHA.",
    "status": "A table of env x app: desired SHA, live SHA, in sync or not, rollout health.",
    "timeline": "Plot deploys over time into --out FILE: one lane per app, markers coloured by result, verifications marked.",
    "validate": "Check deployctl.yaml and every environments/<env>/<app>.deploy file.",
    "verify": "Verify the newest succeeded rollout of --app in --env against its metrics, again.",
    "watch": "Keep the cluster on a branch of the deploy repo: reconcile every new commit, correct drift.",
}


GLOBAL_OPTIONS = ("--log-level",)


class CliError(click.ClickException):
    """A DeployctlError on its way to the terminal, carrying its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


class DeployctlGroup(click.Group):
    """Loads commands lazily and turns every DeployctlError into ``Error: ...`` and its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from :data:`SUMMARIES`: no command module is imported."""
        rows = [(name, SUMMARIES.get(name, "")) for name in sorted(COMMANDS) if name in SUMMARIES]
        rows += [(name, cmd.get_short_help_str(formatter.width)) for name in sorted(COMMANDS)
                 if name not in SUMMARIES and (cmd := self._load(name)) is not None]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # global options may also follow the subcommand
            from deployctl.cli.output import hoist_global_options

            args = hoist_global_options(args, GLOBAL_OPTIONS)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DeployctlError as exc:
            from deployctl.model.printable import printable

            raise CliError(printable(str(exc), newlines=True), exc.exit_code) from exc


@click.group(cls=DeployctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deployctl")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="error",
    show_default=True,
    envvar=settings.LOG_LEVEL.name,
    help="Structured log events go to stderr (JSON when stderr is not a terminal). "
    "May also be given after the subcommand.",
)
def main(log_level: str) -> None:
    """deployctl: a reviewed pull request that changes one line is a deploy.

    A deploy repo holds environments/<env>/<app>.deploy files; the first token of each
    is the commit SHA to run. deployctl validates them, plans and applies them to the
    Kubernetes workloads labelled deployctl.dev/app=<app>, and records every attempt.

    \b
    Quick start:
      deployctl localcluster up          # a real local control plane
      deployctl validate --repo .        # check the deploy files at HEAD
      deployctl reconcile --repo .       # apply them and wait for the rollouts
    """
    from deployctl.log import configure_logging  # here, not at the top: `--help` needs no structlog

    configure_logging(log_level)


def run() -> None:
    """Console-script entry point."""
    main(prog_name="deployctl")


if __name__ == "__main__":  # pragma: no cover
    run()
