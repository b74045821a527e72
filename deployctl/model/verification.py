"""Verification of a deploy against its metrics: the checks of deployctl.yaml, the success-condition
grammar, and the recorded result (values only; the decisions are :mod:`deployctl.rules.verification`).

A check is a Prometheus query with a success condition (``result < 0.01``) measured ``count`` times,
``interval`` apart, of which at most ``failure_limit`` may fail; or "no alert named X firing for this
app". The condition is a tiny grammar read by :func:`parse_condition`, never evaluated as code:
``result OP NUMBER`` comparisons joined by ``and`` / ``or`` (``and`` binds tighter).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from deployctl.errors import InvalidInputError


class VerifyResult(StrEnum):
    """The audit words of a verification, recorded beside (never instead of) the rollout's outcome."""

    VERIFIED = "verified"
    FAILED = "verification-failed"


class OnFailure(StrEnum):
    """What an environment does when verification fails. deployctl never rolls back on its own."""

    NOTIFY = "notify"  # only the notification (every result goes to the outbox)
    FREEZE = "freeze"  # suspend the app there until a person resumes it
    ROLL_FORWARD = "roll-forward"  # a local commit writing the last verified SHA, for review


QUERY, ALERT = "query", "alert"
PLACEHOLDERS = ("{app}", "{env}", "{namespace}", "{sha}")
MAX_CHECKS = 20
MAX_COUNT = 1000
MAX_QUERY_CHARS = 4000


class ConditionError(InvalidInputError):
    """A success condition outside the grammar; the message says what is allowed."""


_OPS = ("<=", ">=", "==", "!=", "<", ">")
_TOKEN = re.compile(r"\s*(?:(<=|>=|==|!=|<|>)|([A-Za-z_]+)|([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?))")
_GRAMMAR_HINT = "write comparisons like 'result < 0.01' joined by 'and'/'or'"


@dataclass(frozen=True)
class Comparison:
    """``result <op> number``."""

    op: str
    number: float

    def holds(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return {
            "<": value < self.number, "<=": value <= self.number, ">": value > self.number,
            ">=": value >= self.number, "==": value == self.number, "!=": value != self.number,
        }[self.op]


@dataclass(frozen=True)
class Condition:
    """A success condition: any of the ``any_of`` groups holds when all of its comparisons hold."""

    text: str
    any_of: tuple[tuple[Comparison, ...], ...]

    def holds(self, value: float) -> bool:
        return any(all(c.holds(value) for c in group) for group in self.any_of)


def parse_condition(text: str) -> Condition:
    """``result < 0.01``, ``result >= 0.99 and result <= 1`` ... as a :class:`Condition`."""
    if len(text) > 200:
        raise ConditionError("is longer than 200 characters; " + _GRAMMAR_HINT)
    tokens: list[tuple[str, str]] = []
    at = 0
    while at < len(text.rstrip()):
        m = _TOKEN.match(text, at)
        if m is None or m.end() == at:
            raise ConditionError(f"cannot read {text[at:].strip()[:20]!r}; {_GRAMMAR_HINT}")
        op, word, number = m.groups()
        tokens.append(("op", op) if op else ("word", word.lower()) if word else ("number", number))
        at = m.end()
    groups: list[tuple[Comparison, ...]] = []
    current: list[Comparison] = []
    i = 0
    while True:
        part = tokens[i : i + 3]
        if [k for k, _ in part] != ["word", "op", "number"] or part[0][1] != "result":
            raise ConditionError(f"{text.strip()[:60]!r} is not a condition; {_GRAMMAR_HINT}")
        number = float(part[2][1])
        if not math.isfinite(number):
            raise ConditionError(f"{part[2][1]!r} is not a finite number")
        current.append(Comparison(part[1][1], number))
        i += 3
        if i == len(tokens):
            break
        joiner = tokens[i]
        if joiner not in (("word", "and"), ("word", "or")):
            raise ConditionError(f"expected 'and' or 'or' after {part[2][1]!r}; {_GRAMMAR_HINT}")
        if joiner[1] == "or":
            groups.append(tuple(current))
            current = []
        i += 1
    groups.append(tuple(current))
    return Condition(" ".join(text.split()), tuple(groups))


@dataclass(frozen=True)
class Check:
    """One verification check of an app, from ``apps.<app>.verify`` in deployctl.yaml."""

    name: str
    kind: str  # QUERY | ALERT
    query: str = ""  # PromQL with {app} {env} {namespace} {sha}; for ALERT the alert name
    condition: Condition | None = None  # QUERY only
    interval_seconds: float = 30.0
    count: int = 1
    failure_limit: int = 0
    environments: tuple[str, ...] = ()  # empty: every environment

    def applies_to(self, env: str) -> bool:
        return not self.environments or env in self.environments

    @property
    def window_seconds(self) -> float:
        return self.interval_seconds * (self.count - 1)

    def wanted(self) -> str:
        """The success condition in words."""
        if self.kind == ALERT:
            return f"no alert {self.query} firing"
        return self.condition.text if self.condition else "-"


def fill(template: str, *, app: str, env: str, namespace: str, sha: str) -> str:
    """A query with its placeholders filled in (names are DNS labels and the SHA hex: safe in PromQL strings)."""
    return (template.replace("{app}", app).replace("{env}", env).replace("{namespace}", namespace)
            .replace("{sha}", sha))


@dataclass(frozen=True)
class Measurement:
    """One look at one check: the value read (None when there was none), whether it passed, and why not."""

    at: datetime
    value: float | None
    passed: bool
    error: str | None = None  # no data, Prometheus unreachable, refused query ...
    unreachable: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "value": self.value, "passed": self.passed, "error": self.error,
                "unreachable": self.unreachable}


@dataclass(frozen=True)
class CheckOutcome:
    """A check's measurements and its verdict."""

    name: str
    kind: str
    query: str  # as sent (placeholders filled) or the alert name
    wanted: str  # the success condition in words
    failure_limit: int
    measurements: tuple[Measurement, ...]

    @property
    def failures(self) -> int:
        return sum(1 for m in self.measurements if not m.passed)

    @property
    def passed(self) -> bool:
        return bool(self.measurements) and self.failures <= self.failure_limit

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "query": self.query, "wanted": self.wanted,
                "failure_limit": self.failure_limit, "failures": self.failures, "passed": self.passed,
                "measurements": [m.as_dict() for m in self.measurements]}

    @staticmethod
    def from_dict(doc: dict[str, Any]) -> CheckOutcome:
        return CheckOutcome(
            name=str(doc["name"]), kind=str(doc["kind"]), query=str(doc["query"]), wanted=str(doc["wanted"]),
            failure_limit=int(doc["failure_limit"]),
            measurements=tuple(
                Measurement(at=datetime.fromisoformat(m["at"]), value=m["value"], passed=bool(m["passed"]),
                            error=m.get("error"), unreachable=bool(m.get("unreachable")))
                for m in doc.get("measurements") or ()
            ),
        )


@dataclass(frozen=True)
class Verification:
    """The verification of one deploy attempt: its own audit result, tied to the attempt by id."""

    attempt_id: int
    env: str
    app: str
    sha: str
    result: str  # a VerifyResult
    reason: str  # one line: what passed, or which check failed with its value and threshold
    checks: tuple[CheckOutcome, ...]
    started_at: datetime
    finished_at: datetime
    trigger: str = "manual"
    id: int | None = field(default=None, compare=False)  # set when read back from the store
    chain_unverified: str | None = field(default=None, compare=False)
    """When read back and checked: why its row does not verify in the audit chain (docs/audit.md)."""

    @property
    def ok(self) -> bool:
        return self.result == VerifyResult.VERIFIED

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "attempt_id": self.attempt_id, "env": self.env, "app": self.app, "sha": self.sha,
                "result": self.result, "reason": self.reason, "trigger": self.trigger,
                "started_at": self.started_at.isoformat(), "finished_at": self.finished_at.isoformat(),
                "checks": [c.as_dict() for c in self.checks]}
