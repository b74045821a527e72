"""The review policy: promotion gates, production approvals and freeze windows, in one place.

Gathers the facts each check needs from the deploy repo (file history, commits, signatures)
or the audit store, runs the pure checks (:mod:`deployctl.rules.gates`, :mod:`deployctl.rules.approval`,
:mod:`deployctl.rules.freeze`) and returns what each caller needs:

- ``validate`` and ``diff``: failed gates as Problems naming the deploy file and the missing
  environment (:func:`gate_results`, :func:`with_gate_problems`);
- ``reconcile``: ``refusals(...) -> {(env, app): reason}``; a refused target is not applied and
  the refusal is audited. ``--override-freeze --reason`` lifts freezes, and the override is
  logged and written into the attempt's audit record (the notes of :class:`ReconcilePolicy`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog

from deployctl import settings
from deployctl.edges.git import history
from deployctl.edges.git import repo as repo_edge
from deployctl.edges.signatures import SignatureVerifier
from deployctl.model.audit import AuditStore
from deployctl.model.config import Config
from deployctl.model.review import ReviewRecord
from deployctl.model.state import DesiredState, Target
from deployctl.reconcile.forge_review import forge_verdicts as forge_verdicts
from deployctl.reconcile.forge_review import review_refusals
from deployctl.rules.approval import ApprovalCommit, Verdict, check_approval
from deployctl.rules.deployfile import split_deploy_path
from deployctl.rules.freeze import ActiveFreeze, frozen_environments
from deployctl.rules.gates import (
    AUDIT,
    GIT,
    RAN,
    GateResult,
    RunFact,
    check_gates,
    gate_problems,
    gated,
    requires_verification,
)
from deployctl.rules.promote import deploy_path
from deployctl.rules.verification import latest

log = structlog.get_logger(__name__)

ALLOWED_SIGNERS_ENV = settings.ALLOWED_SIGNERS.name
GPG_HOME_ENV = settings.GPG_HOME.name


# --- promotion gates ----------------------------------------------------------------------------


def git_facts(
    repo: str | Path, targets: Iterable[Target], config: Config, *, ref: str, before: bool = False
) -> list[RunFact]:
    """What ran in each required environment: the SHAs that were the first token of its deploy file
    in the commits reachable from ``ref`` (with ``before``: from ``ref``'s parents only)."""
    paths = {deploy_path(required, t.app) for t, required in gated(targets, config)}
    if not paths:
        return []
    facts: list[RunFact] = []
    for path, shas in history.deployed_shas(repo, sorted(paths), ref=ref, before=before).items():
        names = split_deploy_path(path)
        assert names is not None
        facts.extend(RunFact(names[0], names[1], sha, "deployed") for sha in shas)
    return facts


def audit_facts(store: AuditStore, targets: Iterable[Target], config: Config) -> list[RunFact]:
    """What the audit history says about each gated SHA in each required environment.

    A run counts only if its rows verify in the audit chain (docs/audit.md): a row inserted or edited
    behind deployctl's back comes back with the reason, and the gate names it in its refusal.
    """
    found: list[tuple[int, RunFact]] = []
    for target, required in gated(targets, config):
        for record in store.query(env=required, app=target.app, sha=target.sha, limit=50):
            if record.attempt.new_sha == target.sha:
                found.append((record.id, RunFact(required, target.app, target.sha, record.result)))
    unverified = store.unverified([i for i, fact in found if fact.result in RAN]) if found else {}
    for attempt_id, reason in unverified.items():
        log.warning("policy.audit_row_unverified", attempt=attempt_id, reason=reason)
    return [replace(fact, unverified=unverified.get(i)) for i, fact in found]


def gate_results(
    repo: str | Path,
    desired: DesiredState,
    *,
    base_ref: str | None = None,
    store: AuditStore | None = None,
    targets: Iterable[Target] | None = None,
    verification_store: AuditStore | None = None,
) -> list[GateResult]:
    """Check ``targets`` (default: all of ``desired``) against their environments' ``requires``.

    A SHA counts when it was the first token of the required environment's deploy file in a
    commit before the one checked: at ``base_ref`` when given, else before the state's own commit
    (its parents: a change cannot be its own evidence), else at HEAD for the work tree. With
    ``store`` it must also have run there successfully according to the audit history. Where
    ``require_verified`` is set, its latest verification there (from ``verification_store``, else
    ``store``) must have passed.
    """
    config = desired.config
    chosen = list(desired.targets if targets is None else targets)
    if config is None or not gated(chosen, config):
        return []
    ref = base_ref or desired.commit or "HEAD"
    before = base_ref is None and desired.commit is not None
    try:
        facts = git_facts(repo, chosen, config, ref=ref, before=before)
    except repo_edge.RepoError:
        if base_ref is not None:
            raise
        facts = []  # a repo without commits yet has no history: every gate fails
    verified, forged = verification_facts(verification_store or store, chosen, config)
    if store is None:
        return check_gates(chosen, config, facts, source=GIT, verified=verified, rejected_verifications=forged)
    in_git = {(f.env, f.app, f.sha) for f in facts}
    ran = [f for f in audit_facts(store, chosen, config) if (f.env, f.app, f.sha) in in_git]
    return check_gates(chosen, config, ran, source=AUDIT, verified=verified, rejected_verifications=forged)


def verification_facts(
    store: AuditStore | None, targets: Iterable[Target], config: Config
) -> tuple[dict[tuple[str, str, str], tuple[str, str]] | None, dict[tuple[str, str, str], list[str]]]:
    """The latest verification (result, reason) of each gated SHA in each required environment, for the
    environments with ``require_verified``; None without a store (the gate then says where to look).

    Only verifications whose rows verify in the audit chain count; the others come back second, per
    (env, app, sha), each as why it does not verify, for the gate to name in its refusal.
    """
    chosen = list(targets)
    if store is None or not requires_verification(chosen, config):
        return None, {}
    found = []
    for target, required in gated(chosen, config):
        if config.environments[target.env].require_verified:
            found += store.verifications(env=required, app=target.app, sha=target.sha, limit=20)
    untrusted = store.unverified_verifications([v.id for v in found if v.id is not None]) if found else {}
    forged: dict[tuple[str, str, str], list[str]] = {}
    for v in found:
        if v.id in untrusted:
            log.warning("policy.verification_row_unverified", verification=v.id, reason=untrusted[v.id])
            forged.setdefault((v.env, v.app, v.sha), []).append(untrusted[v.id])
    trusted = [v for v in found if v.id not in untrusted]
    return {key: (str(v.result), v.reason) for key, v in latest(trusted).items()}, forged


def with_gate_problems(
    repo: str | Path, desired: DesiredState, *, store: AuditStore | None = None,
    verification_store: AuditStore | None = None,
) -> DesiredState:
    """The state with every failed gate added as an error (its targets stay: the file itself is valid)."""
    failed = gate_problems(gate_results(repo, desired, store=store, verification_store=verification_store))
    if not failed:
        return desired
    return replace(desired, problems=desired.problems + tuple(failed))


# --- approvals ----------------------------------------------------------------------------------


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def approval_verdicts(
    repo: str | Path,
    desired: DesiredState,
    *,
    ref: str,
    allowed_signers: Path | None = None,
    gnupg_home: Path | None = None,
    targets: Iterable[Target] | None = None,
) -> dict[tuple[str, str], Verdict]:
    """For each target in an environment with ``require_approval: true``: is its change approved?"""
    config = desired.config
    if config is None:
        return {}
    chosen = [
        t for t in (desired.targets if targets is None else targets)
        if (env := config.environments.get(t.env)) is not None and env.signed_approval
    ]
    signatures: dict[str, tuple[bytes, bytes] | None] = {}
    out: dict[tuple[str, str], Verdict] = {}
    for target in chosen:
        commits = history.introducing_commits(repo, target.path, ref=ref)
        candidates = []
        for info in commits:
            if info.sha not in signatures:
                signatures[info.sha] = history.commit_signature(repo, info.sha)
            signed = signatures[info.sha]
            candidates.append(
                ApprovalCommit(
                    sha=info.sha,
                    author_email=info.author_email,
                    parents=len(info.parents),
                    reviewers=info.reviewers,
                    signature=signed[0] if signed else None,
                    signed_data=signed[1] if signed else None,
                )
            )
        author = commits[0].author_email if commits else ""
        verdict = check_approval(
            candidates,
            config.environments[target.env].approvers,
            author=author,
            signer_of=SignatureVerifier(allowed_signers=allowed_signers, gnupg_home=gnupg_home),
        )
        out[target.key] = verdict
        log.debug("approval.checked", env=target.env, app=target.app, approved=verdict.approved,
                  evidence=verdict.evidence)
    return out


# --- reconcile ------------------------------------------------------------------------------------


def refusals(
    desired: DesiredState,
    *,
    repo: str | Path,
    now: datetime,
    store: AuditStore | None = None,
    override_freeze: bool = False,
    allowed_signers: Path | None = None,
    gnupg_home: Path | None = None,
    verification_store: AuditStore | None = None,
) -> dict[tuple[str, str], str]:
    """Why reconcile must not apply each refused (env, app): failed gates, missing approval, a freeze.

    ``allowed_signers`` and ``gnupg_home`` default to $DEPLOYCTL_ALLOWED_SIGNERS and
    $DEPLOYCTL_GPG_HOME; the gate facts come from ``store`` when given, else from git at the ref.
    """
    if desired.config is None or desired.commit is None:
        return {}
    reasons: dict[tuple[str, str], list[str]] = {}
    for gate in gate_results(repo, desired, store=store, verification_store=verification_store):
        if not gate.passed:
            reasons.setdefault((gate.env, gate.app), []).append(
                f"promotion gate: {gate.path}:{gate.line}: {gate.message()}"
            )
    verdicts = approval_verdicts(
        repo,
        desired,
        ref=desired.commit,
        allowed_signers=allowed_signers or _env_path(ALLOWED_SIGNERS_ENV),
        gnupg_home=gnupg_home or _env_path(GPG_HOME_ENV),
    )
    for key, verdict in verdicts.items():
        if not verdict.approved:
            target = desired.target(*key)
            where = target.path if target else key[0]
            reasons.setdefault(key, []).append(
                f"approval required: {where}: {verdict.evidence}; merge it through a reviewed pull request"
            )
    if not override_freeze:
        for key, freeze in freezes(desired, now).items():
            reasons.setdefault(key, []).append(freeze.message())
    out = {key: "; ".join(parts) for key, parts in reasons.items()}
    for (env, app), reason in sorted(out.items()):
        log.info("policy.refused", env=env, app=app, reason=reason)
    return out


def freezes(desired: DesiredState, now: datetime) -> dict[tuple[str, str], ActiveFreeze]:
    """Each target in a frozen environment, with the freeze that covers ``now``."""
    if desired.config is None:
        return {}
    frozen = frozen_environments(desired.config, now)
    return {t.key: frozen[t.env] for t in desired.targets if t.env in frozen}


def freeze_overrides(
    desired: DesiredState, now: datetime, *, reason: str, actor: str
) -> dict[tuple[str, str], str]:
    """The audit note for each target whose freeze an ``--override-freeze`` lifts, and one log event each."""
    notes: dict[tuple[str, str], str] = {}
    for key, freeze in freezes(desired, now).items():
        notes[key] = (
            f"freeze overridden by {actor}: {reason} (environments.{freeze.env}.freeze[{freeze.index}]: "
            f"{freeze.window.reason}, until {freeze.end.strftime('%Y-%m-%dT%H:%MZ')})"
        )
        log.warning("freeze.overridden", env=key[0], app=key[1], actor=actor, reason=reason,
                    window=freeze.window.reason)
    return notes


@dataclass(frozen=True)
class ReconcilePolicy:
    """What the policy says about one reconcile: the (env, app) it refuses and why, the audit note of
    each target whose freeze an override lifts, and the pull request and approvals of each target a forge
    approval lets through (the caller writes notes and reviews into the attempts' records)."""

    refusals: Mapping[tuple[str, str], str]
    notes: Mapping[tuple[str, str], str]
    reviews: Mapping[tuple[str, str], ReviewRecord] = field(default_factory=dict)


def for_reconcile(
    desired: DesiredState,
    *,
    repo: str | Path,
    store: AuditStore | None,
    override_freeze: bool = False,
    reason: str | None = None,
    now: datetime | None = None,
    verification_store: AuditStore | None = None,
) -> ReconcilePolicy:
    """What ``run_once`` needs: the refusals (forge approvals included: they fail closed), the notes of
    freeze overrides and the reviews of forge approvals, for the records of the attempts they let through."""
    from deployctl.model.audit import current_actor

    when = now or datetime.now(UTC)
    out = refusals(desired, repo=repo, now=when, store=store, override_freeze=override_freeze,
                   verification_store=verification_store)
    verdicts = forge_verdicts(desired, repo=repo)
    for key, reason_text in review_refusals(verdicts).items():
        out[key] = f"{out[key]}; {reason_text}" if key in out else reason_text
        log.info("policy.refused", env=key[0], app=key[1], reason=reason_text)
    reviews = {key: v.record for key, v in verdicts.items() if v.approved and v.record is not None}
    notes: dict[tuple[str, str], str] = {}
    if override_freeze:
        actor = current_actor()
        who = actor.user + (f" (CI job {actor.ci_job})" if actor.ci_job else "")
        notes = freeze_overrides(desired, when, reason=reason or "no reason given", actor=who)
    return ReconcilePolicy(refusals=out, notes=notes, reviews=reviews)
