"""The options of one reconcile run, as one typed value built once by the CLI or the controller."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReconcileOptions:
    """How a reconcile run behaves. Defaults are the CLI's; the controller sets its own once."""

    envs: tuple[str, ...] = ()  # environments to reconcile; empty means all of the config's
    apps: tuple[str, ...] = ()  # apps to reconcile; empty means all
    wait: bool = True  # wait for each rollout (else: applied, not waited for)
    timeout: float = 300.0  # seconds for the whole run's rollouts
    concurrency: int = 16  # applies in flight at once
    poll_interval: float = 0.5  # seconds between rollout checks, at least
    allowed_namespaces: tuple[str, ...] = ()  # `ctx/ns` or bare `ns` (current context) that may be touched (empty: any)
    observe_concurrency: int = 2  # LISTs in flight at once (1 in the long-lived controller: lower peak memory)
    allow_retagged: bool = False  # apply a tag that was re-pushed after it ran in a required environment
    override_freeze: bool = False  # apply during a freeze window (needs override_reason; audited)
    override_reason: str | None = None
    force_older: bool = False  # apply even when the live deploy commit is newer (audited)
    allow_non_descendant: bool = False  # apply a commit that is neither ancestor nor descendant of the live one
    lock: bool = True  # hold each environment's lock (a Lease in its namespace) while acting on it
    lock_timeout: float | None = None  # seconds to wait for an environment's lock (None: ``timeout``)
    lock_lease: float = 15.0  # seconds an environment lock outlives a holder that stopped renewing it
