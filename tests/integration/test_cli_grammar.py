"""One grammar across every command: walks the click command tree (-o json|yaml, --out, durations)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.cli.output import Duration, OutputOption
from tests.integration.test_audit_cli import audit  # noqa: F401  (fixture)
from tests.integration.test_review_cli import Shop, shop  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

# Commands that print data and must speak -o json|yaml. The ones that need a cluster are run in
# test_suspend.py and test_reconcile.py; the rest are run below.
NEEDS_CLUSTER = {"plan", "reconcile", "status", "suspend", "resume", "verify"}  # verify: and a Prometheus
DURATION_WORDS = ("timeout", "interval", "wait", "duration", "deadline", "period")


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from walk(sub, (*path, name))
    else:
        yield " ".join(path), command


COMMANDS = dict(walk(main))


def _output(command: click.Command) -> OutputOption | None:
    return next((p for p in command.params if isinstance(p, OutputOption)), None)


def test_every_data_command_offers_json_yaml_and_out_file() -> None:
    data = {name for name, cmd in COMMANDS.items() if _output(cmd) is not None}
    expected = {"validate", "plan", "reconcile", "status", "diff", "promote", "rollback", "codeowners", "history",
                "events export", "notify drain", "timeline", "localcluster status"}
    assert expected <= data
    for name in data:
        option = _output(COMMANDS[name])
        assert option is not None and {"json", "yaml"} <= set(option.formats), name
        assert "--out" in {o for p in COMMANDS[name].params for o in p.opts}, name


def test_every_duration_option_accepts_go_syntax_days_and_bare_seconds() -> None:
    checked = 0
    for name, cmd in COMMANDS.items():
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            if any(w in param.name.replace("_", "-") for w in DURATION_WORDS) and not param.is_flag:
                assert isinstance(param.type, Duration), f"{name} {param.opts[0]} is not a Duration"
                assert param.type.convert("10m", param, None) == 600.0
                assert param.type.convert("1h30m", param, None) == 5400.0
                assert param.type.convert("2d", param, None) == 172800.0
                assert param.type.convert("45", param, None) == 45.0
                checked += 1
    assert checked >= 8


def test_a_bad_duration_names_the_option_and_shows_an_example() -> None:
    result = CliRunner().invoke(main, ["reconcile", "--timeout", "10 minutes"])
    assert result.exit_code == 2
    assert "Invalid value for '--timeout': --timeout '10 minutes' is not a positive duration; write e.g. 90s, " \
           "10m, 1h30m, 2d or 300 (seconds)" in result.output


def test_log_level_works_before_and_after_the_subcommand(tmp_path: Path) -> None:
    for args in (["--log-level", "debug", "localcluster", "status", "--dir", str(tmp_path)],
                 ["localcluster", "status", "--dir", str(tmp_path), "--log-level=debug"],
                 ["localcluster", "status", "--log-level", "debug", "--dir", str(tmp_path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
        assert result.output.startswith("not running")
    bad = CliRunner().invoke(main, ["localcluster", "status", "--log-level", "loud"])
    assert bad.exit_code == 2 and "'loud' is not one of" in bad.output


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1), (args, result.output)
    return result.stdout


@pytest.fixture
def invocations(shop: Shop, audit: str, tmp_path: Path) -> dict[str, Callable[[], list[str]]]:  # noqa: F811
    """How to run each data command that needs no cluster (a callable: some reset the work tree first)."""
    staging_web = shop.file("staging", "web")
    production_web = shop.file("production", "web")

    def reset() -> None:
        for env, text in (("staging", staging_web), ("production", production_web)):
            (shop.deploy.path / "environments" / env / "web.deploy").write_text(text)

    def fixed(*args: str) -> Callable[[], list[str]]:
        return lambda: list(args)

    def after_reset(*args: str) -> Callable[[], list[str]]:
        def make() -> list[str]:
            reset()
            return list(args)
        return make

    def fresh_init() -> list[str]:
        shutil.rmtree(tmp_path / "init", ignore_errors=True)
        return ["init", str(tmp_path / "init"), "--app", "web", "--ci", "gitlab"]

    return {
        "validate": fixed("validate", "--repo", shop.path),
        "diff": fixed("diff", "--repo", shop.path, "--base", "HEAD", "--head", "HEAD"),
        "promote": after_reset("promote", "web", "--from", "staging", "--to", "production", "--repo", shop.path),
        "rollback": after_reset("rollback", "web", "--env", "staging", "--repo", shop.path),
        "codeowners": fixed("codeowners", "--repo", shop.path),
        "history": fixed("history", "--audit", audit),
        "audit verify": fixed("audit", "verify", "--audit", audit),
        "events export": fixed("events", "export", "--audit", audit),
        "notify drain": fixed("notify", "drain", "--audit", audit, "--max-wait", "0"),
        "timeline": fixed("timeline", "--audit", audit, "--out", str(tmp_path / "t.html")),
        "localcluster status": fixed("localcluster", "status", "--dir", str(tmp_path / "nothing")),
        "schema": fixed("schema"),
        "init": fresh_init,
    }


def test_json_and_yaml_carry_the_same_data_on_every_command(
    invocations: dict[str, Callable[[], list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEPLOYCTL_SETTINGS", raising=False)
    data = {name for name, cmd in COMMANDS.items() if _output(cmd) is not None}
    assert data - NEEDS_CLUSTER <= set(invocations), "add an invocation for every new data command"
    for name, make in invocations.items():
        as_json = json.loads(_run([*make(), "-o", "json"]))
        as_yaml = yaml.safe_load(_run([*make(), "-o", "yaml"]))
        assert as_json == as_yaml, name
        assert as_json not in (None, {}, []) or name == "diff", name


def test_out_file_gets_what_stdout_would(invocations: dict[str, Callable[[], list[str]]], tmp_path: Path) -> None:
    target = tmp_path / "history.json"
    args = invocations["history"]()
    assert _run([*args, "-o", "json", "--out", str(target)]) == ""
    assert json.loads(target.read_text()) == json.loads(_run([*args, "-o", "json"]))


def test_diff_exit_code_tells_ci_whether_there_are_changes(shop: Shop) -> None:  # noqa: F811
    base = shop.deploy.head
    assert CliRunner().invoke(main, ["diff", "--repo", shop.path, "--base", base, "--exit-code"]).exit_code == 0
    shop.deploy.commit({"environments/staging/api.deploy": f"{'3' * 40}\n"}, message="Deploy api")
    assert CliRunner().invoke(main, ["diff", "--repo", shop.path, "--base", base]).exit_code == 0
    changed = CliRunner().invoke(main, ["diff", "--repo", shop.path, "--base", base, "--exit-code"])
    assert changed.exit_code == 2 and "staging" in changed.output
    shop.deploy.commit({"environments/staging/api.deploy": "not-a-sha\n"}, message="Broken")
    assert CliRunner().invoke(main, ["diff", "--repo", shop.path, "--base", base, "--exit-code"]).exit_code == 1


def test_diff_says_when_the_freeze_of_a_changed_environment_ends(shop: Shop) -> None:  # noqa: F811
    from tests.integration.test_review_cli import CONFIG

    frozen = CONFIG.replace("    approvers: [\"@shop/release-managers\"]\n", "    approvers: [\"@shop/release-managers\"]\n"
                            "    freeze:\n      - {start: 2000-01-01, end: 2100-01-01, reason: Long freeze}\n")
    assert frozen != CONFIG
    base = shop.deploy.head
    shop.deploy.commit({"deployctl.yaml": frozen, "environments/production/api.deploy": f"{'3' * 40}\n"},
                       message="Deploy api to production")
    code, out = _run_diff(shop.path, base)
    assert "freeze: production is frozen until 2100-01-01T00:00Z (Long freeze; deployctl.yaml:" in out
    as_json = json.loads(_run_diff(shop.path, base, "-o", "json")[1])
    assert as_json["freezes"]["production"]["until"] == "2100-01-01T00:00Z"


def _run_diff(repo: str, base: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["diff", "--repo", repo, "--base", base, *extra])
    return result.exit_code, result.stdout


def test_the_documented_fields_are_the_ones_printed(invocations: dict[str, Callable[[], list[str]]]) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line.split("|")[2] for line in doc.splitlines()
            if line.strip().startswith("| `") and line.count("|") >= 3}
    for name, make in invocations.items():
        data = json.loads(_run([*make(), "-o", "json"]))
        row = next((fields for cmd, fields in rows.items() if f"`{name}`" in cmd), None)
        assert row is not None, f"docs/config.md documents no fields for {name}"
        if isinstance(data, dict) and name != "schema":
            undocumented = [k for k in data if f"`{k}`" not in row]
            assert undocumented == [], name
