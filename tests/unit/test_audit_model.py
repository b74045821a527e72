"""The pure parts of the audit module: times, actors, URLs and the export shape."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployctl.edges.audit.url import default_sqlite_path, sqlite_path_from_url
from deployctl.errors import InvalidInputError
from deployctl.model.audit import (
    EVENT_FIELDS,
    AuditRecord,
    Finish,
    actor_from_env,
    parse_when,
    record_to_event,
)
from tests.fixtures.auditdata import T0, make_attempt

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2d", NOW - timedelta(days=2)),
        ("90m", NOW - timedelta(minutes=90)),
        ("1w", NOW - timedelta(weeks=1)),
        ("12h", NOW - timedelta(hours=12)),
        ("30s", NOW - timedelta(seconds=30)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T12:30:00Z", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01T14:30:00+02:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_when_takes_durations_ago_and_iso_times(text: str, expected: datetime) -> None:
    assert parse_when(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2 days", "-1d", "2y", ""])
def test_when_that_is_neither_duration_nor_iso_says_what_to_write(text: str) -> None:
    with pytest.raises(InvalidInputError, match="use an ISO time like .* or a duration like 2d, 90m, 1w"):
        parse_when(text, now=NOW)


def test_actor_outside_ci_is_the_user_on_the_host() -> None:
    actor = actor_from_env({"USER": "ann"}, host="laptop")
    assert (actor.user, actor.host, actor.ci_job) == ("ann", "laptop", None)


def test_actor_without_user_variables_falls_back() -> None:
    assert actor_from_env({}, host="h", fallback_user="uid1000").user == "uid1000"


def test_actor_in_github_actions_is_the_triggering_user_and_the_run_url() -> None:
    env = {
        "USER": "runner",
        "GITHUB_ACTOR": "ann",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_REPOSITORY": "acme/deploys",
        "GITHUB_SERVER_URL": "https://github.com",
    }
    actor = actor_from_env(env, host="gh-runner")
    assert actor.user == "ann"
    assert actor.ci_job == "https://github.com/acme/deploys/actions/runs/42/attempts/2"


def test_actor_in_gitlab_is_the_job_url_or_id() -> None:
    env = {"GITLAB_USER_LOGIN": "bob", "CI_JOB_ID": "7", "CI_PROJECT_PATH": "acme/deploys"}
    assert actor_from_env(env, host="h").ci_job == "gitlab:acme/deploys#7"
    env["CI_JOB_URL"] = "https://gitlab.example/acme/deploys/-/jobs/7"
    actor = actor_from_env(env, host="h")
    assert (actor.user, actor.ci_job) == ("bob", "https://gitlab.example/acme/deploys/-/jobs/7")


def test_actor_in_jenkins_is_the_build_url_or_job_and_build_id() -> None:
    assert actor_from_env({"BUILD_ID": "9", "JOB_NAME": "deploy"}, host="h").ci_job == "deploy#9"
    assert actor_from_env({"BUILD_URL": "https://j/9/", "BUILD_ID": "9"}, host="h").ci_job == "https://j/9/"


def test_an_unknown_trigger_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="trigger 'cron' is not one of ci, watch, webhook"):
        make_attempt(trigger="cron")


def test_an_outcome_with_an_unknown_result_is_rejected_when_built() -> None:
    with pytest.raises(InvalidInputError, match="result 'ok' is not one of succeeded, failed"):
        Finish(1, "ok")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/deployctl/audit.db", "/var/lib/deployctl/audit.db"),
        ("sqlite:////var/audit.db", "/var/audit.db"),
        ("sqlite:audit.db", "audit.db"),
        ("sqlite:state/audit.db", "state/audit.db"),
        ("/tmp/audit.db", "/tmp/audit.db"),
    ],
)
def test_sqlite_urls_name_absolute_or_relative_files(url: str, path: str) -> None:
    assert sqlite_path_from_url(url) == Path(path)


def test_a_sqlite_url_with_a_host_part_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="write sqlite:///absolute/path.db or sqlite:relative"):
        sqlite_path_from_url("sqlite://audit.db")


def test_default_sqlite_file_is_under_xdg_state_home() -> None:
    assert default_sqlite_path({"XDG_STATE_HOME": "/state"}) == Path("/state/deployctl/audit.db")
    assert default_sqlite_path({}) == Path.home() / ".local/state/deployctl/audit.db"


def _record(**changes: object) -> AuditRecord:
    base = AuditRecord(
        id=7,
        attempt=make_attempt(),
        result="succeeded",
        error=None,
        finished_at=T0 + timedelta(seconds=3),
        duration_seconds=3.0,
        digest="sha256:abc",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_exported_event_has_the_stable_fields_in_order_and_is_json() -> None:
    event = record_to_event(_record())
    assert tuple(event) == EVENT_FIELDS
    assert json.loads(json.dumps(event)) == event
    assert event["started_at"] == "2024-05-01T12:00:00Z"
    assert event["finished_at"] == "2024-05-01T12:00:03Z"
    assert event["release"] == event["deploy_commit"]
    assert event["reviewers"] == ["bob@example.com"]
    assert (event["actor_user"], event["actor_ci_job"]) == ("ci-bot", "https://ci.example/jobs/1")


def test_the_export_field_names_never_change() -> None:
    # Warehouses load these columns by name: add new fields at the end, never rename or drop one.
    assert EVENT_FIELDS[:29] == (
        "schema", "id", "release", "env", "app", "namespace", "workloads", "result", "error",
        "started_at", "finished_at", "duration_seconds", "previous_sha", "new_sha", "image", "digest",
        "deploy_commit", "deploy_file", "file_commit", "file_author", "file_committer", "file_commit_time",
        "file_commit_summary", "reviewers", "app_commit_summary", "trigger", "actor_user", "actor_host",
        "actor_ci_job",
    )  # fmt: skip


def test_a_started_record_exports_null_outcome_fields() -> None:
    event = record_to_event(_record(result="started", finished_at=None, duration_seconds=None, digest=None))
    assert (event["result"], event["finished_at"], event["duration_seconds"]) == ("started", None, None)
