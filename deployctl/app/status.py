"""What runs where: the observe-and-plan step of ``deployctl status`` and ``plan``, and the status row.

One path for the CLI (``plan``, ``status -o json``) and the dashboard (``/api/v1/status``): read the
desired state, observe the cluster with reconcile's own observe step, plan without writing (with the
ordering verdicts reconcile would reach), and describe each env/app with the same field names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict

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
