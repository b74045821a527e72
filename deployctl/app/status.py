"""What runs where: the observe-and-plan step of ``deployctl status`` and ``plan``, and the status row.

One path for the CLI (``plan``, ``status -o json``) and the dashboard (``/api/v1/status``): read the
desired state, observe the cluster with reconcile's own observe step, plan without writing (with the
ordering verdicts reconcile would reach), and describe each env/app with the same field names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from deployctl.model.audit import AttemptEvent, AuditStore, RolloutEventKind
from deployctl.model.state import DesiredState
from deployctl.model.workload import suspension
from deployctl.reconcile import observe as rec
from deployctl.reconcile.ordering import RelationOf, with_ordering
from deployctl.reconcile.ports import Clusters
from deployctl.rules.plan import Action, Change, Plan, make_plan


def observed_plan(
    desired: DesiredState,
    clusters: Clusters,
    *,
    relation: RelationOf | None,
    envs: Sequence[str] = (),
    apps: Sequence[str] = (),
    allowed_namespaces: Sequence[str] = (),
) -> tuple[Plan, Mapping[str, str]]:
    """Observe (the same step reconcile takes) and plan, without writing. Returns the plan, each change that
    reconcile would skip or refuse by its ordering verdict saying so (``relation``: how two deploy commits
    relate, e.g. :func:`~deployctl.reconcile.ordering.git_relation`; None: not checked), and the
    environments refused by ``allowed_namespaces`` (env -> why)."""
    seen = rec.observe_selection(desired, clusters, envs=envs, apps=apps, allowed_namespaces=allowed_namespaces)
    plan = make_plan(desired, seen.live, envs=seen.envs, apps=apps, images=seen.known_images)
    return (with_ordering(plan, relation) if relation is not None else plan), seen.refused


def status_row(change: Change) -> dict[str, object]:
    """One env/app of ``deployctl status -o json``: desired and live SHA, in sync or not, rollout health,
    and who suspended it (``deployctl suspend``) and why."""
    held = suspension(change.workloads)
    in_sync = change.action is Action.IN_SYNC or (
        change.action is Action.SUSPENDED and change.live_images != ()
        and all(i == change.desired_image for i in change.live_images))
    return {
        "env": change.env,
        "app": change.app,
        "desired_sha": change.new_sha,
        "live_sha": change.old_sha if change.workloads else None,
        "in_sync": in_sync,
        "action": str(change.action),
        "health": str(change.health.health) if change.health else "-",
        "message": change.reason if held or not change.health else change.health.message,
        "suspended": asdict(held) if held else None,
    }


PRE_DEPLOY_ATTEMPTS = 5
"""How many of a SHA's latest attempts ``pre_deploy_steps`` looks through for a pre-deploy Job's events."""


@dataclass(frozen=True)
class PreDeployStep:
    """An app's pre-deploy Job for one SHA as its attempt recorded it (the attempt's last pre-deploy event)."""

    job: str
    outcome: str
    """``complete``, ``failed``, or ``not complete`` (created or found, no verdict recorded: still running,
    or the run timed out or was stopped)."""
    detail: str
    attempt_id: int
    at: datetime
    chain_unverified: str | None = None
    """Why the attempt's rows do not verify in the audit chain (None: they do)."""

    @classmethod
    def of(cls, attempt_id: int, last: AttemptEvent) -> PreDeployStep:
        job, _, what = last.detail.partition(": ")
        outcome = "complete" if what == "complete" else "failed" if what.startswith("failed") else "not complete"
        return cls(job.removeprefix("job/"), outcome, what, attempt_id, last.at)

    def as_dict(self) -> dict[str, object]:
        """``status -o json``'s ``pre_deploy``."""
        return {"job": self.job, "outcome": self.outcome, "detail": self.detail, "attempt_id": self.attempt_id,
                "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "chain_verified": self.chain_unverified is None, "chain_unverified_reason": self.chain_unverified}


def pre_deploy_steps(store: AuditStore, rows: Sequence[Mapping[str, object]]) -> dict[tuple[str, str], PreDeployStep]:
    """The pre-deploy Job (``apps.<app>.pre_deploy``) of each row's desired SHA by (env, app): from the newest
    attempt of that SHA with a pre-deploy event whose rows verify in the audit chain, else the newest such
    attempt, marked (``chain_unverified``); absent when none has one. (The events are not chained themselves:
    they are believed as far as their attempt is.)"""
    found: dict[tuple[str, str], list[PreDeployStep]] = {}
    for row in rows:
        sha = row.get("desired_sha")
        if not sha:
            continue
        env, app = str(row["env"]), str(row["app"])
        for record in store.query(env=env, app=app, sha=str(sha), limit=PRE_DEPLOY_ATTEMPTS):
            events = [e for e in store.events_of(record.id) if e.kind == RolloutEventKind.PRE_DEPLOY]
            if events and record.attempt.new_sha == sha:  # ``sha`` filters by prefix
                found.setdefault((env, app), []).append(PreDeployStep.of(record.id, events[-1]))
    ids = [step.attempt_id for steps in found.values() for step in steps]
    unverified = store.unverified(ids) if ids else {}
    out: dict[tuple[str, str], PreDeployStep] = {}
    for key, steps in found.items():
        checked = [replace(s, chain_unverified=unverified.get(s.attempt_id)) for s in steps]
        out[key] = next((s for s in checked if s.chain_unverified is None), checked[0])
    return out
