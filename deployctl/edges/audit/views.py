"""Stable SQL views over the audit tables, for analysts: ``deploy_events``.

``deploy_events`` has one row per finished deploy attempt (an attempt with an outcome) and
column names and types that do not change (docs/analytics.md lists them). New columns may be
added at the end; none is renamed or removed. Both stores have it:

=====================  ======================  ================================  ==========================
column                 PostgreSQL type         SQLite value                      meaning
=====================  ======================  ================================  ==========================
attempt_id             bigint                  integer                           audit id of the attempt
env, app, namespace    text                    text
change                 text                    text                              deployed | upgraded | rolledback
result                 text                    text                              succeeded, failed, ...
error                  text                    text
started_at             timestamptz             text, ISO 8601 UTC (...Z)
finished_at            timestamptz             text, ISO 8601 UTC (...Z)
duration_seconds       double precision        real
previous_sha, new_sha  text                    text
image, digest          text                    text                              digest: of the outcome, else pinned
deploy_commit          text                    text                              the deploy repo commit (release)
deploy_file            text                    text
author, committer      text                    text                              of the deploy-file commit
approvers              text (JSON array)       text (JSON array)
commit_message         text                    text                              first line of the app commit
deploy_message         text                    text                              first line of the deploy commit
trigger, actor, ci_job text                    text
=====================  ======================  ================================  ==========================

``change`` follows the CDEvents rule of :mod:`deployctl.rules.cdevents`: no previous SHA is a
first deploy, a deploy commit written by ``deployctl rollback`` is a rollback, anything else an upgrade.
"""

from __future__ import annotations

_CHANGE = (
    "CASE WHEN a.previous_sha IS NULL THEN 'deployed' "
    "WHEN a.file_commit_summary LIKE 'Roll back % in % to %' THEN 'rolledback' "
    "ELSE 'upgraded' END"
)


def _first_line(column: str, dialect: str) -> str:
    if dialect == "postgres":
        return f"split_part({column}, E'\\n', 1)"
    cut = f"instr({column}, char(10))"
    return f"CASE WHEN {cut} > 0 THEN substr({column}, 1, {cut} - 1) ELSE {column} END"


def _deploy_events(dialect: str) -> str:
    if dialect == "postgres":
        duration = "extract(epoch FROM o.finished_at - a.started_at)::double precision"
    else:
        duration = "round((julianday(o.finished_at) - julianday(a.started_at)) * 86400.0, 3)"
    # Built from constants only; the view takes no user input.
    return f"""CREATE VIEW deploy_events AS
        SELECT a.id AS attempt_id, a.env AS env, a.app AS app, a.namespace AS namespace,
               {_CHANGE} AS change, o.result AS result, o.error AS error,
               a.started_at AS started_at, o.finished_at AS finished_at, {duration} AS duration_seconds,
               a.previous_sha AS previous_sha, a.new_sha AS new_sha, a.image AS image,
               coalesce(o.digest, a.digest) AS digest, a.deploy_commit AS deploy_commit,
               a.deploy_file AS deploy_file, a.file_author AS author, a.file_committer AS committer,
               a.reviewers AS approvers, {_first_line("a.app_commit_summary", dialect)} AS commit_message,
               {_first_line("a.file_commit_summary", dialect)} AS deploy_message, a.trigger AS trigger,
               a.actor_user AS actor, a.actor_ci_job AS ci_job
        FROM attempts a JOIN outcomes o ON o.attempt_id = a.id"""  # noqa: S608


DEPLOY_EVENTS_SQLITE = _deploy_events("sqlite")
DEPLOY_EVENTS_POSTGRES = _deploy_events("postgres")
DEPLOY_EVENTS_COLUMNS = (
    "attempt_id", "env", "app", "namespace", "change", "result", "error", "started_at", "finished_at",
    "duration_seconds", "previous_sha", "new_sha", "image", "digest", "deploy_commit", "deploy_file",
    "author", "committer", "approvers", "commit_message", "deploy_message", "trigger", "actor", "ci_job",
)  # fmt: skip
"""The view's columns, in order; add at the end, never rename."""
