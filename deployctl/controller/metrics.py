"""Prometheus metrics of the controller (``deployctl watch``), in a registry of their own.

A dedicated :class:`~prometheus_client.CollectorRegistry` keeps the controller's figures apart
from whatever else a process registers globally (and lets tests build as many as they like).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from deployctl.model.vocabulary import ExitCode, RunStatus
from deployctl.reconcile.outcome import APPLIED, DRIFT_CORRECTED, IN_SYNC, SUCCEEDED, Outcome

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Results that mean the app runs what the deploy repo says (or is on its way there).
_IN_SYNC_RESULTS = (IN_SYNC, SUCCEEDED, DRIFT_CORRECTED, APPLIED)


class ControllerMetrics:
    """The controller's metrics; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconcile_duration = Histogram(
            "deployctl_reconcile_duration_seconds", "Wall time of one reconcile run (fetch excluded).",
            ["trigger"], registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.queue_time = Histogram(
            "deployctl_reconcile_queue_seconds", "Time from a trigger (webhook, drift, slots taken over, interval) "
            "to the start of the reconcile that serves it: waiting for the run in flight and the fetch.",
            ["trigger"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.reconciles = Counter(
            "deployctl_reconciles_total", "Reconcile runs by how they ended (ok, failed, error, stopped).",
            ["trigger", "status"], registry=self.registry,
        )
        self.last_success = Gauge(
            "deployctl_last_successful_reconcile_timestamp_seconds",
            "Unix time at which the last reconcile with every app in sync and healthy finished.",
            registry=self.registry,
        )
        self.deploys = Counter(
            "deployctl_deploys_total", "Deploy attempts (writes) by environment, app and result.",
            ["env", "app", "result"], registry=self.registry,
        )
        self.drift_corrections = Counter(
            "deployctl_drift_corrections_total", "Live images changed behind deployctl's back and put back.",
            ["env", "app"], registry=self.registry,
        )
        self.webhook_requests = Counter(
            "deployctl_webhook_requests_total",
            "Webhook requests by provider and result (accepted, forwarded, unavailable, ignored, unauthorized, "
            "malformed, too-large, timeout).",
            ["provider", "result"], registry=self.registry,
        )
        self.out_of_sync = Gauge(
            "deployctl_apps_out_of_sync", "Apps not running their desired SHA after the last reconcile.",
            ["env"], registry=self.registry,
        )
        self.leader = Gauge(
            "deployctl_leader", "1 while this replica holds the leader lease (or runs without election).",
            registry=self.registry,
        )
        self.head = Gauge(
            "deployctl_fetch_timestamp_seconds", "Unix time of the last successful fetch of the deploy repo.",
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "deployctl_reconcile_errors_total",
            "Runs that raised instead of finishing, by where (fetch, reconcile) and the exception's type.",
            ["stage", "error"], registry=self.registry,
        )
        self.deploy_timestamp = Gauge(
            "deployctl_deploy_timestamp_seconds",
            "Unix time at which the last deploy of each app finished; one series per app, labelled with its SHA.",
            ["env", "app", "sha"], registry=self.registry,
        )
        self._deployed_sha: dict[tuple[str, str], str] = {}
        self._out_of_sync_envs: set[str] = set()

    def observe_reconcile(self, outcomes: Iterable[Outcome], *, seconds: float, trigger: str, exit_code: int) -> None:
        """Record a finished reconcile run and its outcomes."""
        self.reconcile_duration.labels(trigger).observe(seconds)
        ok = exit_code == ExitCode.OK
        self.reconciles.labels(trigger, RunStatus.OK if ok else RunStatus.FAILED).inc()
        if ok:
            self.last_success.set(self.clock())
        out: dict[str, int] = dict.fromkeys(self._out_of_sync_envs, 0)
        for o in outcomes:
            out.setdefault(o.env, 0)
            if o.result not in _IN_SYNC_RESULTS:
                out[o.env] += 1
            if o.result != IN_SYNC:
                self.deploys.labels(o.env, o.app, o.result).inc()
            if o.result == DRIFT_CORRECTED:
                self.drift_corrections.labels(o.env, o.app).inc()
            if o.result in (SUCCEEDED, APPLIED) and o.new_sha:
                self._deployed(o.env, o.app, o.new_sha, o.finished_at.timestamp() if o.finished_at else self.clock())
        for env, n in out.items():
            self.out_of_sync.labels(env).set(n)
        self._out_of_sync_envs = set(out)

    def _deployed(self, env: str, app: str, sha: str, when: float) -> None:
        """Keep one series per app (a Grafana annotation per deploy): the old SHA's is removed."""
        old = self._deployed_sha.get((env, app))
        if old is not None and old != sha:
            self.deploy_timestamp.remove(env, app, old)
        self._deployed_sha[(env, app)] = sha
        self.deploy_timestamp.labels(env, app, sha).set(when)

    def observe_aborted(self, *, seconds: float, trigger: str, status: RunStatus, error_type: str = "DeployctlError") -> None:
        """Record a run that raised (``error``, also counted in the errors) or was stopped (``stopped``)."""
        self.reconcile_duration.labels(trigger).observe(seconds)
        self.reconciles.labels(trigger, status).inc()
        if status is RunStatus.ERROR:
            self.observe_error(stage="reconcile", error_type=error_type)

    def observe_error(self, *, stage: str, error_type: str) -> None:
        """Count a fetch or run that raised (any exception: the worker logs it and goes on)."""
        self.reconcile_errors.labels(stage, error_type).inc()

    def webhook(self, provider: str, result: str) -> None:
        self.webhook_requests.labels(provider, result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
