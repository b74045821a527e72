"""Every key of deployctl.yaml with its type, default and meaning: the one source of the loader's
allowed keys, the JSON Schema (:mod:`deployctl.model.config.schema`) and the docs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployctl.model.config.values import APPROVER, DNS_LABEL, IMAGE_REPOSITORY, PIN_MODES, PRE_DEPLOY
from deployctl.model.verification import MAX_COUNT, MAX_QUERY_CHARS, OnFailure

ON_FAILURE = tuple(str(o) for o in OnFailure)


@dataclass(frozen=True)
class Key:
    """One key of a mapping in deployctl.yaml."""

    name: str
    schema: dict[str, Any]  # its JSON Schema (without the description)
    doc: str
    required: bool = False
    default: Any = None

    def json_schema(self) -> dict[str, Any]:
        out = {**self.schema, "description": self.doc}
        if self.default is not None:
            out["default"] = self.default
        return out


def anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


NAME = {"type": "string", "pattern": anchored(DNS_LABEL.pattern), "maxLength": 63}
NAMES = {"type": ["array", "null"], "items": NAME, "uniqueItems": True}
TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}
DURATION = {"type": ["string", "number"],
            "pattern": r"^\s*(?:\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:w|d|h|m|s|ms|us|µs|ns))+)\s*$"}
DAY_TIME = {"type": "string", "pattern": r"^\s*(?:[A-Za-z]{3,9}\s+)?[0-9]{1,2}:[0-9]{2}\s*$"}

TOP = (
    Key("version", {"const": 1}, "Schema version; must be 1.", required=True),
    Key("apps", {"type": "object"}, "App name (a DNS-1123 label, the <app> of deploy file names) "
        "-> its settings.", required=True),
    Key("environments", {"type": "object"}, "Environment name (a DNS-1123 label, the <env> folder "
        "under environments/) -> its settings.", required=True),
)
APP = (
    Key("image", {"type": "string", "pattern": anchored(IMAGE_REPOSITORY.pattern)},
        "Image repository without tag or digest, e.g. registry.example.com/shop/web.", required=True),
    Key("tag", {"type": "string", "pattern": r"\{(?:short_)?sha\}"}, "Tag template: {sha} is the full SHA, "
        "{short_sha} its first 12 characters.", default="{sha}"),
    Key("container", NAME, "Container to update in the app's workloads [default: the app name]."),
    Key("source", {"type": ["string", "null"]}, "The app's own git repo (a path relative to the deploy repo, "
        "or a URL); validate checks SHAs against it when it is on disk."),
    Key("depends_on", NAMES, "Apps that must be deployed and healthy first, in the same environment.",
        default=[]),
    Key("pin", {"enum": list(PIN_MODES)}, "digest: deploy image@sha256:... resolved from the tag; tag: deploy "
        "image:tag as is.", default="digest"),
    Key("commit_url", {"type": "string", "pattern": r"^https?://\S*\{(?:short_)?sha\}"}, "Web page of an app "
        "commit, with {sha} or {short_sha}, e.g. https://github.com/acme/web/commit/{sha} (links in the dashboard)."),
    Key("owner", {"type": "string"}, "The team or person who owns the app (shown and filtered on in the dashboard)."),
    Key("verify", {"type": "array", "items": {"$ref": "#/$defs/check"}}, "Checks that verify each deploy of the app "
        "against its metrics after a successful rollout (docs/config.md#verification).", default=[]),
    Key("pre_deploy", {"type": "string", "pattern": anchored(PRE_DEPLOY.pattern)}, "A Job template run with the "
        "new image before each rollout, once per SHA: job/<name> or cronjob/<name> (suspended), labelled "
        "deployctl.dev/hook=pre-deploy and deployctl.dev/app=<app> in the app's namespace (docs/config.md#pre-deploy-jobs)."),
)
ENVIRONMENT = (
    Key("namespace", NAME, "Kubernetes namespace to deploy into.", required=True),
    Key("context", {"type": ["string", "null"]}, "kubeconfig context of the cluster [default: the current one]."),
    Key("requires", NAMES, "Promotion gate: a SHA may only run here after it ran in each of these.", default=[]),
    Key("approvers", {"type": ["array", "null"], "items": {"type": "string", "pattern": anchored(APPROVER.pattern)}},
        "Who must review changes here: @user, @org/team or an email address.", default=[]),
    Key("require_approval", {"enum": [True, False, "forge"]}, "A change here needs an approval from approvers: "
        "true, a commit signed by one of them; forge, approving reviews of the pull request that brought it "
        "(docs/review.md).", default=False),
    Key("min_approvals", {"type": "integer", "minimum": 1, "maximum": 100}, "With require_approval: forge, how "
        "many distinct approvers must approve.", default=1),
    Key("freeze", {"type": "array", "items": {"$ref": "#/$defs/freeze"}}, "Windows in which nothing is deployed "
        "here: date ranges, cron + duration, or weekday/time ranges in a time zone.", default=[]),
    Key("require_verified", {"type": "boolean"}, "Promotion gate: a SHA may only run here after it was *verified* "
        "(its checks passed) in each environment of requires, not just deployed there.", default=False),
    Key("on_verification_failure", {"enum": list(ON_FAILURE)}, "When a deploy here fails verification: notify "
        "(only the notification), freeze (suspend the app here until a person resumes it) or roll-forward (also "
        "propose the last verified SHA for review: a pull request when the forge is configured, else a local "
        "commit). Never an automatic rollback.",
        default="notify"),
)
CHECK = (
    Key("name", NAME, "The check's name (a DNS-1123 label), shown in results and notifications.", required=True),
    Key("query", {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS}, "PromQL instant query; "
        "{app}, {env}, {namespace} and {sha} are filled in. Every series it returns must meet success; no data "
        "fails (add `or vector(0)` when no series means no errors)."),
    Key("success", {"type": "string"}, "The condition each value must meet: comparisons like 'result < 0.01' "
        "joined by and/or (required with query)."),
    Key("alert", {"type": "string", "minLength": 1}, "Instead of a query: the check fails while an alert of this "
        "name fires whose app/env/namespace labels, where it has them, are this deploy's."),
    Key("interval", DURATION, "Time between two measurements.", default="30s"),
    Key("count", {"type": "integer", "minimum": 1, "maximum": MAX_COUNT}, "How many measurements to take.",
        default=1),
    Key("window", DURATION, "Instead of count: measure every interval for this long (count = window / interval "
        "+ 1)."),
    Key("failure_limit", {"type": "integer", "minimum": 0}, "How many measurements may fail before the check "
        "fails.", default=0),
    Key("environments", NAMES, "Environments where the check runs [default: every environment]."),
)
FREEZE_DATED = (
    Key("start", {"type": "string"}, "Start: ISO 8601 with a timezone (a bare date is 00:00 UTC).", required=True),
    Key("end", {"type": "string"}, "End (after start), same form as start.", required=True),
    Key("reason", TEXT, "Why; shown when a deploy is refused.", required=True),
    Key("weekly", {"type": "boolean"}, "Repeat every 7 days from start (at most 7 days long).", default=False),
)
FREEZE_CRON = (
    Key("cron", {"type": "string"}, "5-field cron expression starting each freeze, e.g. '0 16 * * FRI'.",
        required=True),
    Key("duration", DURATION, "How long each freeze lasts, e.g. 64h or 2d16h.", required=True),
    Key("timezone", {"type": "string"}, "IANA time zone of the cron expression, e.g. Europe/Oslo.", required=True),
    Key("reason", TEXT, "Why; shown when a deploy is refused.", required=True),
)
FREEZE_RANGE = (
    Key("from", DAY_TIME, "Start as 'Fri 16:00' (or '18:00' for every day), local time.", required=True),
    Key("until", DAY_TIME, "End as 'Mon 08:00' (or '06:00'), local time.", required=True),
    Key("timezone", {"type": "string"}, "IANA time zone, e.g. Europe/Oslo.", required=True),
    Key("reason", TEXT, "Why; shown when a deploy is refused.", required=True),
)


def names(keys: tuple[Key, ...], *more: tuple[Key, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k.name for group in (keys, *more) for k in group))


TOP_KEYS = names(TOP)
APP_KEYS = names(APP)
ENV_KEYS = names(ENVIRONMENT)
FREEZE_KEYS = names(FREEZE_DATED, FREEZE_CRON, FREEZE_RANGE)
CHECK_KEYS = names(CHECK)
