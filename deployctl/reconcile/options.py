"""The options of one reconcile run, as one typed value built once by the CLI or the controller, in groups
by concern (as kopf's ``OperatorSettings``): what is selected, what is overridden, how long and how
wide it runs, and how it holds the environment locks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Selection:
    """What the run may act on."""

    envs: tuple[str, ...] = ()  # environments to reconcile; empty means all of the config's
    apps: tuple[str, ...] = ()  # apps to reconcile; empty means all
    allowed_namespaces: tuple[str, ...] = ()  # `ctx/ns` or bare `ns` (current context) that may be touched (empty: any)


@dataclass(frozen=True)
class Overrides:
    """Guards a person lifts on purpose; each is logged and audited."""

    allow_retagged: bool = False  # apply a tag that was re-pushed after it ran in a required environment
    override_freeze: bool = False  # apply during a freeze window (needs override_reason; audited)
    override_reason: str | None = None
    force_older: bool = False  # apply even when the live deploy commit is newer (audited)
    allow_non_descendant: bool = False  # apply a commit that is neither ancestor nor descendant of the live one


@dataclass(frozen=True)
class Timing:
    """How long the run waits and how many requests it has in flight."""

    wait: bool = True  # wait for each rollout (else: applied, not waited for)
    timeout: float = 300.0  # seconds for the whole run's rollouts
    concurrency: int = 16  # applies in flight at once
    poll_interval: float = 0.5  # seconds between rollout checks, at least
    observe_concurrency: int = 2  # LISTs in flight at once (1 in the long-lived controller: lower peak memory)


@dataclass(frozen=True)
class Locking:
    """The app locks (a Lease per app in its namespace), each held from before its attempt is recorded until
    its outcome is: through its rollout wait."""

    enabled: bool = True
    timeout: float | None = None  # seconds to wait for an app's lock (None: the run's ``timing.timeout``)
    lease: float = 15.0  # seconds an app lock outlives a holder that stopped renewing it
    # locks each environment of a run holds at once: what one renewer (8 PUTs in flight) keeps alive within
    # their renew deadline; more apps wait to start (at 10,000 apps, ~840 held lapsed on a loaded 2-core
    # machine: bench/shard.py). Counted per environment's reconciler, not across the environments of a run.
    max_held: int = 256


@dataclass(frozen=True)
class ReconcileOptions:
    """How a reconcile run behaves. Defaults are the CLI's; the controller sets its own once."""

    selection: Selection = field(default_factory=Selection)
    overrides: Overrides = field(default_factory=Overrides)
    timing: Timing = field(default_factory=Timing)
    locking: Locking = field(default_factory=Locking)

    def for_envs(self, envs: tuple[str, ...]) -> ReconcileOptions:
        """The same options, selecting ``envs`` (one environment's part of a run)."""
        return replace(self, selection=replace(self.selection, envs=envs))

    @property
    def lock_timeout(self) -> float:
        """Seconds to wait for an environment's lock."""
        return self.locking.timeout if self.locking.timeout is not None else self.timing.timeout
