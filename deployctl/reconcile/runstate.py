"""What one reconcile run carries: what the outer run decided before it (:class:`Prepared`) and each
env/app's state through it (:class:`AppRun`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from deployctl.model.state import Target
from deployctl.model.vocabulary import AppState
from deployctl.model.workload import Workload
from deployctl.reconcile.artifacts import PinDecisions
from deployctl.reconcile.outcome import Outcome
from deployctl.reconcile.rollout_events import RolloutLog
from deployctl.rules.ordering import Relation
from deployctl.rules.plan import Change


@dataclass
class AppRun:
    """One env/app's way through a run: its change, where it stands, its record and its outcome."""

    change: Change
    state: AppState = AppState.PENDING
    audit_id: int | None = None
    recorded: bool = False  # the attempt is on record (written before the apply)
    started_at: datetime | None = None
    workloads: tuple[Workload, ...] = ()
    outcome: Outcome | None = None
    events: RolloutLog = field(default_factory=RolloutLog)  # between the apply and the verdict, for the record


@dataclass(frozen=True)
class Prepared:
    """What the outer run (:func:`deployctl.app.run.run_once`) decided before the reconciler starts."""

    refusals: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (env, app) -> why it is not applied
    pinner: Callable[[Sequence[Target]], PinDecisions] | None = None  # digest pins for targets (None: tags)
    relation: Callable[[str, str], Relation] | None = None  # how two deploy commits relate (None: no check)
