"""The config model of deployctl.yaml: how apps map to images and environments to clusters (values only)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from deployctl.model.limits import CONFIG_BYTES
from deployctl.model.verification import Check, OnFailure

CONFIG_PATH = "deployctl.yaml"
CONFIG_VERSION = 1
MAX_CONFIG_BYTES = CONFIG_BYTES
MAX_YAML_DEPTH = 16

DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
# An image repository without tag or digest: [registry[:port]/]path, path components lowercase.
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REPOSITORY = re.compile(
    rf"(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?{_IMAGE_PATH}(?:/{_IMAGE_PATH})*"
)
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
APPROVER = re.compile(
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:/[A-Za-z0-9._-]+)?|[^@\s]+@[^@\s]+\.[^@\s]+"
)
PIN_MODES = ("digest", "tag")
PRE_DEPLOY = re.compile(rf"(job|cronjob)/({DNS_LABEL.pattern})")  # apps.<app>.pre_deploy: a Job template


def is_dns_label(name: str) -> bool:
    """A Kubernetes DNS-1123 label: lowercase alphanumerics and '-', 1-63 chars, alphanumeric at both ends."""
    return DNS_LABEL.fullmatch(name) is not None


def dns_label_problem(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 label, or None when it is one."""
    if is_dns_label(name):
        return None
    if not name:
        return "is empty"
    if len(name) > 63:
        return f"is {len(name)} characters long; the limit is 63"
    if name.lower() != name and is_dns_label(name.lower()):
        return "has uppercase letters; use lowercase"
    return "may only contain lowercase letters, digits and '-', and must start and end with a letter or digit"


def show(value: str, limit: int = 60) -> str:
    """A value quoted for an error message: control characters escaped, long values cut."""
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


@dataclass(frozen=True)
class FreezeWindow:
    """A period in which nothing may be deployed to an environment. Times are tz-aware UTC.

    With ``weekly`` the window repeats every 7 days from ``start`` (for example every Friday
    18:00 to Monday 06:00); ``end - start`` is then at most 7 days.
    """

    start: datetime
    end: datetime
    reason: str
    weekly: bool = False

    def active(self, at: datetime) -> bool:
        """Whether the window covers the instant ``at`` (tz-aware)."""
        if at < self.start:
            return False
        if not self.weekly:
            return at < self.end
        return (at - self.start) % timedelta(days=7) < self.end - self.start


@dataclass(frozen=True)
class RecurringFreeze:
    """A freeze that repeats in local time (an IANA ``timezone``): a cron expression starting a
    period of ``duration``, or a weekday/time range (``from`` Fri 16:00 ``until`` Mon 08:00; without
    weekdays, every day). Local wall-clock times, so daylight saving time is followed."""

    reason: str
    timezone: str
    cron: str | None = None
    duration: timedelta | None = None
    from_day: int | None = None  # 0 = Monday; None with from_time = every day
    from_time: time | None = None
    until_day: int | None = None
    until_time: time | None = None


@dataclass(frozen=True)
class AppConfig:
    """How one app's commits become images, and which container runs them."""

    name: str
    image: str
    tag: str = "{sha}"
    container: str = ""  # defaults to name
    source: str | None = None
    depends_on: tuple[str, ...] = ()
    pin: str = "digest"  # "digest" | "tag"
    commit_url: str | None = None  # e.g. "https://github.com/acme/web/commit/{sha}", for links to a commit
    owner: str | None = None  # the team or person who owns the app (shown and filtered on in the dashboard)
    verify: tuple[Check, ...] = ()  # checks run after a successful rollout (docs/config.md#verification)
    pre_deploy: str | None = None  # "job/<name>" or "cronjob/<name>": run before each rollout (docs/config.md)

    def checks_for(self, env: str) -> tuple[Check, ...]:
        """The verification checks that run in ``env``."""
        return tuple(c for c in self.verify if c.applies_to(env))

    def __post_init__(self) -> None:
        if not self.container:
            object.__setattr__(self, "container", self.name)

    def image_tag(self, sha: str) -> str:
        return self.tag.replace("{sha}", sha).replace("{short_sha}", sha[:12])

    def image_ref(self, sha: str) -> str:
        """The image reference for a commit: ``<image>:<tag>`` with {sha} and {short_sha} filled in."""
        return f"{self.image}:{self.image_tag(sha)}"

    def commit_link(self, sha: str) -> str | None:
        """The web page of an app commit from ``commit_url`` ({sha}, {short_sha} filled in), if configured."""
        if not self.commit_url:
            return None
        return self.commit_url.replace("{sha}", sha).replace("{short_sha}", sha[:12])


FORGE = "forge"
APPROVAL_BY = ("signature", FORGE)


@dataclass(frozen=True)
class EnvironmentConfig:
    """Where an environment runs and which gates guard it."""

    name: str
    namespace: str
    context: str | None = None
    requires: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    require_approval: bool = False
    freeze: tuple[FreezeWindow | RecurringFreeze, ...] = ()
    require_verified: bool = False  # a SHA must have been verified, not only deployed, in each of requires
    on_verification_failure: OnFailure = OnFailure.NOTIFY
    approval_by: str = "signature"  # APPROVAL_BY: "signature" (require_approval: true) or "forge"
    min_approvals: int = 1  # distinct approvers a forge approval needs

    @property
    def forge_review(self) -> bool:
        """``require_approval: forge``: changes here need approving pull-request reviews."""
        return self.require_approval and self.approval_by == FORGE

    @property
    def signed_approval(self) -> bool:
        """``require_approval: true``: changes here need a commit signed by an approver."""
        return self.require_approval and self.approval_by != FORGE

    def frozen_at(self, at: datetime) -> FreezeWindow | None:
        """The first date-range freeze window active at ``at``, if any (recurring ones: rules.freeze)."""
        for window in self.freeze:
            if isinstance(window, FreezeWindow) and window.active(at):
                return window
        return None


@dataclass(frozen=True)
class Config:
    """A parsed deployctl.yaml. Entries with errors are left out and named in ``invalid_*``."""

    version: int
    apps: Mapping[str, AppConfig]
    environments: Mapping[str, EnvironmentConfig]
    path: str = CONFIG_PATH
    invalid_apps: frozenset[str] = field(default=frozenset())
    invalid_environments: frozenset[str] = field(default=frozenset())
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # "apps.web" -> line


def find_cycle(graph: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """One cycle in a name -> dependencies graph as [a, b, ..., a], or None. Iterative (no recursion)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(graph.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, ())))
    return None
