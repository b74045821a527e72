"""Compare the desired state with the live workloads and decide, per env/app, what to do. Pure: no I/O.

Actions:

- ``in-sync``: every owned workload runs the desired image.
- ``update``: the desired SHA (image) differs from what deployctl last applied.
- ``drift``: deployctl applied the desired image, but the live image was changed since
  (for example with ``kubectl set image``); reconcile puts it back.
- ``missing``: no workload in the namespace carries ``deployctl.dev/app=<app>``.
- ``blocked``: a dependency (``depends_on``) is failed, missing or invalid.
- ``invalid``: the deploy file or config is invalid, or a workload lacks the container.
- ``suspended``: a workload carries ``deployctl.dev/suspended`` (``deployctl suspend``); left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from deployctl.model.review import ReviewRecord
from deployctl.model.state import DesiredState, Target
from deployctl.model.workload import (
    ANN_APPLIED_AT,
    ANN_CHANGE_CAUSE,
    ANN_COMMIT,
    ANN_DEPLOY_COMMIT,
    ANN_DEPLOY_FILE,
    ANN_DIGEST,
    ANN_IMAGE,
    KINDS_TEXT,
    Health,
    RolloutStatus,
    Workload,
    combined_status,
    suspension,
)


class Action(str, Enum):
    IN_SYNC = "in-sync"
    UPDATE = "update"
    DRIFT = "drift"
    MISSING = "missing"
    BLOCKED = "blocked"
    INVALID = "invalid"
    SUSPENDED = "suspended"

    def __str__(self) -> str:
        return self.value


WRITES = (Action.UPDATE, Action.DRIFT)


@dataclass(frozen=True)
class Change:
    """The plan for one app in one environment."""

    env: str
    app: str
    action: Action
    namespace: str
    target: Target | None
    workloads: tuple[Workload, ...] = ()
    desired_image: str | None = None
    live_images: tuple[str, ...] = ()
    old_sha: str | None = None
    reason: str = ""
    health: RolloutStatus | None = None
    depends_on: tuple[str, ...] = ()
    review: ReviewRecord | None = None  # require_approval: forge: the pull request and approvals that let it through

    @property
    def key(self) -> tuple[str, str]:
        return (self.env, self.app)

    @property
    def new_sha(self) -> str | None:
        return self.target.sha if self.target else None

    @property
    def writes(self) -> bool:
        return self.action in WRITES

    def as_dict(self) -> dict[str, object]:
        return {
            "env": self.env,
            "app": self.app,
            "action": str(self.action),
            "namespace": self.namespace,
            "old_sha": self.old_sha,
            "new_sha": self.new_sha,
            "desired_image": self.desired_image,
            "live_images": list(self.live_images),
            "workloads": [f"{w.namespace}/{w.ref}" for w in self.workloads],
            "health": str(self.health.health) if self.health else None,
            "health_message": self.health.message if self.health else None,
            "reason": self.reason,
            "deploy_file": self.target.path if self.target else None,
        }


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    deploy_commit: str | None = None
    ref: str = "HEAD"
    counts: Mapping[str, int] = field(default_factory=dict)

    def writes(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.writes)

    def get(self, env: str, app: str) -> Change | None:
        for c in self.changes:
            if c.env == env and c.app == app:
                return c
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "deploy_commit": self.deploy_commit,
            "counts": dict(self.counts),
            "changes": [c.as_dict() for c in self.changes],
        }


def select(keys: Iterable[tuple[str, str]], envs: Sequence[str], apps: Sequence[str]) -> list[tuple[str, str]]:
    """Filter (env, app) keys by ``--env`` and ``--app`` (empty means all)."""
    return [k for k in keys if (not envs or k[0] in envs) and (not apps or k[1] in apps)]


def dependency_order(apps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Apps sorted so every app comes after its dependencies (ties by name). Unknown deps are ignored."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(app: str, stack: tuple[str, ...]) -> None:
        if app in seen or app in stack:
            return
        for dep in sorted(apps.get(app, ())):
            if dep in apps:
                visit(dep, (*stack, app))
        seen.add(app)
        done.append(app)

    for app in sorted(apps):
        visit(app, ())
    return done


def plan_target(target: Target, workloads: Sequence[Workload], desired_image: str) -> Change:
    """Decide the action for one valid target given its live workloads."""
    base = {
        "env": target.env,
        "app": target.app,
        "namespace": target.namespace,
        "target": target,
        "workloads": tuple(workloads),
        "desired_image": desired_image,
        "depends_on": target.depends_on,
    }
    if not workloads:
        return Change(
            action=Action.MISSING,
            reason=f"no {KINDS_TEXT} in namespace {target.namespace} is labelled "
            f"deployctl.dev/app={target.app}; label the app's workloads to let deployctl manage them",
            **base,  # type: ignore[arg-type]
        )
    lacking = [w for w in workloads if target.container not in w.images]
    if lacking:
        names = ", ".join(f"{w.ref} (containers: {', '.join(sorted(w.images)) or 'none'})" for w in lacking)
        return Change(
            action=Action.INVALID,
            reason=f"{names} has no container {target.container!r}; set apps.{target.app}.container "
            "in deployctl.yaml to the container to update",
            **base,  # type: ignore[arg-type]
        )
    live = tuple(w.images[target.container] for w in workloads)
    old_shas = {w.annotations.get(ANN_COMMIT) for w in workloads}
    old_sha = next(iter(old_shas)) if len(old_shas) == 1 else None
    health = combined_status(workloads)
    suspended = suspension(workloads)
    if suspended is not None:
        return Change(action=Action.SUSPENDED, live_images=live, old_sha=old_sha, health=health,
                      reason=suspended.describe(), **base)  # type: ignore[arg-type]
    if all(image == desired_image for image in live):
        return Change(action=Action.IN_SYNC, live_images=live, old_sha=old_sha, health=health,
                      **base)  # type: ignore[arg-type]
    last_applied = {w.annotations.get(ANN_IMAGE) for w in workloads}
    if last_applied == {desired_image}:
        drifted = sorted({i for i in live if i != desired_image})
        return Change(
            action=Action.DRIFT,
            live_images=live,
            old_sha=old_sha,
            health=health,
            reason=f"live image {', '.join(drifted)} differs from the {desired_image} deployctl applied",
            **base,  # type: ignore[arg-type]
        )
    return Change(action=Action.UPDATE, live_images=live, old_sha=old_sha, health=health,
                  **base)  # type: ignore[arg-type]


def make_plan(
    desired: DesiredState,
    live: Mapping[str, Sequence[Workload]],
    *,
    envs: Sequence[str] = (),
    apps: Sequence[str] = (),
    images: Mapping[tuple[str, str], str] | None = None,
) -> Plan:
    """Plan every selected env/app. ``live`` maps a namespace to its labelled workloads;
    ``images`` optionally overrides the image to apply per (env, app) (e.g. digest-pinned)."""
    images = images or {}
    by_app: dict[tuple[str, str], list[Workload]] = {}
    for workloads in live.values():
        for w in workloads:
            by_app.setdefault((w.namespace, w.app), []).append(w)

    changes: dict[tuple[str, str], Change] = {}
    for target in desired.targets:
        if (envs and target.env not in envs) or (apps and target.app not in apps):
            continue
        image = images.get(target.key, target.image)
        changes[target.key] = plan_target(target, by_app.get((target.namespace, target.app), []), image)

    problems_by_key: dict[tuple[str, str], list[str]] = {}
    for p in desired.errors:
        if p.env is not None and p.app is not None:
            problems_by_key.setdefault((p.env, p.app), []).append(str(p))
    for key in sorted(desired.invalid()):
        if (envs and key[0] not in envs) or (apps and key[1] not in apps):
            continue
        namespace = ""
        if desired.config and key[0] in desired.config.environments:
            namespace = desired.config.environments[key[0]].namespace
        changes[key] = Change(
            env=key[0], app=key[1], action=Action.INVALID, namespace=namespace, target=None,
            reason="; ".join(problems_by_key.get(key, ["invalid"])),
        )

    # Dependents of a dependency that cannot become healthy in this run are blocked.
    for env in sorted({k[0] for k in changes}):
        env_changes = {k[1]: c for k, c in changes.items() if k[0] == env}
        order = dependency_order({a: c.depends_on for a, c in env_changes.items()})
        for app in order:
            change = env_changes[app]
            if not change.writes:
                continue
            for dep in change.depends_on:
                dep_change = env_changes.get(dep)
                why = _unhealthy_dependency(dep, dep_change)
                if why:
                    blocked = Change(
                        env=change.env, app=change.app, action=Action.BLOCKED, namespace=change.namespace,
                        target=change.target, workloads=change.workloads, desired_image=change.desired_image,
                        live_images=change.live_images, old_sha=change.old_sha, health=change.health,
                        reason=why, depends_on=change.depends_on,
                    )
                    env_changes[app] = blocked
                    changes[(env, app)] = blocked
                    break

    ordered = tuple(changes[k] for k in sorted(changes))
    return Plan(changes=ordered, deploy_commit=desired.commit, ref=desired.ref, counts=count_actions(ordered))


def count_actions(changes: Iterable[Change]) -> dict[str, int]:
    """How many changes plan each action (a plan's ``counts``)."""
    counts: dict[str, int] = {}
    for c in changes:
        counts[str(c.action)] = counts.get(str(c.action), 0) + 1
    return counts


def _unhealthy_dependency(dep: str, change: Change | None) -> str | None:
    if change is None:
        return None  # not selected in this run (or no deploy file): nothing to wait for
    if change.action in (Action.MISSING, Action.INVALID, Action.BLOCKED):
        return f"dependency {dep} is {change.action}"
    if change.action is Action.IN_SYNC and change.health and change.health.health is Health.FAILED:
        return f"dependency {dep} is unhealthy: {change.health.message}"
    return None


def annotations_for(change: Change, image: str, deploy_commit: str | None, now: datetime) -> dict[str, str]:
    """The annotations an apply writes on each workload: what runs, from which file and commit, and when."""
    target = change.target
    assert target is not None
    digest = image.split("@", 1)[1] if "@" in image else None
    cause = f"deployctl: {target.app} {target.sha[:12]} from {target.path}"
    if deploy_commit:
        cause += f" at {deploy_commit[:12]}"
    ann = {
        ANN_COMMIT: target.sha,
        ANN_IMAGE: image,
        ANN_DEPLOY_FILE: target.path,
        ANN_APPLIED_AT: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ANN_CHANGE_CAUSE: cause,
    }
    if deploy_commit:
        ann[ANN_DEPLOY_COMMIT] = deploy_commit
    if digest:
        ann[ANN_DIGEST] = digest
    return ann
