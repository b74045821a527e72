"""Promotion gates: an environment with ``requires: [staging]`` only accepts a SHA that ran in staging.

Pure: the facts (which SHA ran where, and how it ended) come in as values, gathered by
:mod:`deployctl.reconcile.policy` from one of two sources: the audit history (``source="audit"``: only
``succeeded`` and ``drift-corrected`` attempts of a SHA that the git history also shows count, and
only if their rows verify in the audit chain) or the required environment's deploy file
in git (``source="git"``: a SHA counts as deployed only if it was the file's first token in a
commit before the one being checked; SHAs listed below the first line never count, since a
change could add one in the same commit that deploys it to production).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from deployctl.model.config import Config
from deployctl.model.problem import ERROR, Problem
from deployctl.model.state import Target
from deployctl.model.vocabulary import RAN as AUDIT_RAN

AUDIT = "audit"
GIT = "git"
DEPLOYED = "deployed"
"""What the git source knows of a SHA that reached an environment (it cannot tell how the rollout ended)."""
RAN = AUDIT_RAN | {DEPLOYED}
"""Results that count as 'ran in that environment'."""
VERIFIED = "verified"
UNVERIFIED = "unverified"  # ran, but no verification on record
UNKNOWN = "unknown"  # no audit history at hand to say


@dataclass(frozen=True)
class RunFact:
    """One SHA of one app that was deployed to one environment, and how it ended."""

    env: str
    app: str
    sha: str
    result: str
    unverified: str | None = None
    """Why the audit row this fact comes from does not verify (docs/audit.md); such a fact never counts."""


@dataclass(frozen=True)
class GateResult:
    """Whether one target's SHA has run in one environment its environment requires."""

    env: str
    app: str
    sha: str
    required: str
    passed: bool
    source: str  # "audit" | "git"
    path: str
    line: int
    ran: bool = True  # it ran in the required environment (False: that is why the gate failed)
    verification: str | None = None  # with require_verified: VERIFIED, a failed result, UNVERIFIED or UNKNOWN
    verification_reason: str = ""
    rejected: tuple[str, ...] = ()
    """Audit rows that claimed the run but do not verify (forged or tampered), each with the reason."""

    def message(self) -> str:
        """A one-line account, naming the deploy file and the required environment."""
        if self.passed:
            verified = " and was verified there" if self.verification == VERIFIED else ""
            return f"{self.sha[:12]} ran in {self.required}{verified}"
        if self.ran and self.verification == UNKNOWN:
            return (f"{self.sha[:12]} ran in {self.required}, but environment {self.env} requires it verified there "
                    "(require_verified) and verification results are in the audit history: give --audit URL "
                    "(or $DEPLOYCTL_AUDIT)")
        rejected = "".join(f"; not counted: {reason}" for reason in self.rejected)
        if self.ran and self.verification == UNVERIFIED:
            return (f"{self.sha[:12]} ran in {self.required} but was never verified there{rejected}; environment "
                    f"{self.env} requires it verified (require_verified): run deployctl verify --env "
                    f"{self.required} --app {self.app}, or deploy a SHA that passed")
        if self.ran and self.verification is not None:
            return (f"{self.sha[:12]} failed verification in {self.required} ({self.verification_reason}){rejected}; "
                    f"environment {self.env} requires a SHA verified in {self.required} (require_verified): "
                    "deploy a SHA that passed")
        where = (
            f"in the audit history, as the first line of environments/{self.required}/{self.app}.deploy "
            "in an earlier commit"
            if self.source == AUDIT
            else f"as the first line of environments/{self.required}/{self.app}.deploy in an earlier commit"
        )
        return (
            f"{self.sha[:12]} has not run successfully in {self.required} ({where}){rejected}; environment "
            f"{self.env} requires {self.required} first: deploy it to {self.required} "
            f"(deployctl promote {self.app} --from <env> --to {self.required}) and promote from there"
        )

    def problem(self) -> Problem:
        return Problem(self.path, self.line, self.message(), ERROR, env=self.env, app=self.app)

    def as_dict(self) -> dict[str, object]:
        return {
            "env": self.env,
            "app": self.app,
            "sha": self.sha,
            "required": self.required,
            "passed": self.passed,
            "source": self.source,
            "path": self.path,
            "line": self.line,
            "verification": self.verification,
            "verification_reason": self.verification_reason,
            "rejected": list(self.rejected),
        }


def gated(targets: Iterable[Target], config: Config) -> list[tuple[Target, str]]:
    """(target, required environment) pairs to check: one per entry in the target env's ``requires``."""
    pairs: list[tuple[Target, str]] = []
    for target in targets:
        env = config.environments.get(target.env)
        if env is None:
            continue
        pairs.extend((target, required) for required in env.requires)
    return pairs


def check_gates(
    targets: Iterable[Target], config: Config, facts: Iterable[RunFact], *, source: str,
    verified: Mapping[tuple[str, str, str], tuple[str, str]] | None = None,
    rejected_verifications: Mapping[tuple[str, str, str], Sequence[str]] | None = None,
) -> list[GateResult]:
    """Check every target against every environment its environment requires.

    ``verified``: the latest verification (result, reason) of each (env, app, sha), for environments with
    ``require_verified``; None when verification results are not at hand (the gate then fails, saying so).
    A fact whose audit row does not verify never counts; its reason goes into the result. So does each of
    ``rejected_verifications``: verification rows left out of ``verified`` because they do not verify.
    """
    facts = list(facts)
    ran = {(f.env, f.app, f.sha) for f in facts if f.result in RAN and f.unverified is None}
    rejected: dict[tuple[str, str, str], list[str]] = {}
    for f in facts:
        if f.result in RAN and f.unverified is not None:
            rejected.setdefault((f.env, f.app, f.sha), []).append(f.unverified)
    out = []
    for target, required in gated(targets, config):
        did_run = (required, target.app, target.sha) in ran
        verification, reason = None, ""
        if config.environments[target.env].require_verified:
            if verified is None:
                verification = UNKNOWN
            else:
                verification, reason = verified.get((required, target.app, target.sha), (UNVERIFIED, ""))
        out.append(GateResult(
            env=target.env,
            app=target.app,
            sha=target.sha,
            required=required,
            passed=did_run and verification in (None, VERIFIED),
            source=source,
            path=target.path,
            line=target.line,
            ran=did_run,
            verification=verification,
            verification_reason=reason,
            rejected=(() if did_run else tuple(rejected.get((required, target.app, target.sha), ())))
            + (() if verification in (None, VERIFIED) else
               tuple((rejected_verifications or {}).get((required, target.app, target.sha), ()))),
        ))  # fmt: skip
    return out


def requires_verification(targets: Iterable[Target], config: Config) -> bool:
    """Whether any target's environment has ``require_verified``."""
    return any(config.environments[t.env].require_verified for t, _ in gated(targets, config))


def violations(results: Iterable[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


def gate_problems(results: Iterable[GateResult]) -> list[Problem]:
    """Each failed gate as an error naming the deploy file, its line and the missing environment."""
    return [r.problem() for r in results if not r.passed]
