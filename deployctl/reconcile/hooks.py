"""Pre-deploy Jobs as a step of an app's apply (``apps.<app>.pre_deploy``, docs/config.md#pre-deploy-jobs).

Before an app's workloads change, its template is copied into a Job with the new image (the Job named once
per SHA, :func:`deployctl.rules.hooks.job_name`), and the apply waits until that Job completes, within the
run's deadline. A Job found from an earlier run is not run again: complete, the apply goes on; failed, it
stops with the Job's reason until a person deletes the Job. Each step goes on the attempt's record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog

from deployctl.errors import KubeConflictError, PreDeployError
from deployctl.model.audit import RolloutEventKind
from deployctl.model.config import AppConfig, Config
from deployctl.reconcile.ports import Clusters
from deployctl.reconcile.runstate import AppRun
from deployctl.rules.hooks import job_from_template, job_name, job_state, parse_ref

log = structlog.get_logger(__name__)

_MAX_GAP = 2.0  # seconds between two reads of a running Job, at most


class PreDeploySteps:
    """The pre-deploy Jobs of one run: :meth:`before` runs an app's (if it names one) ahead of its apply."""

    def __init__(self, clusters: Clusters, config: Config | None, *, deadline: float,
                 poll_interval: float, clock: Callable[[], datetime]) -> None:
        self.clusters = clusters
        self.apps: Mapping[str, AppConfig] = config.apps if config else {}
        self.deadline = deadline  # the run's time.monotonic() deadline: the Job shares the rollouts' timeout
        self.poll_interval = poll_interval
        self.clock = clock

    def before(self, run: AppRun, image: str, annotations: Mapping[str, str]) -> None:
        """Run ``run``'s pre-deploy Job with ``image`` and wait for it; raise :class:`PreDeployError` when it
        is invalid, failed, or not complete by the deadline (the app is then not applied)."""
        app = self.apps.get(run.change.app)
        target = run.change.target
        if app is None or app.pre_deploy is None or target is None:
            return
        kind, template = parse_ref(app.pre_deploy)
        namespace = run.change.namespace
        name = job_name(app.name, template, target.sha)
        cluster = self.clusters(target.context)
        job = cluster.read_batch("Job", namespace, name)
        if job is not None:
            run.events.note(self.clock(), RolloutEventKind.PRE_DEPLOY,
                            f"job/{name}: found from an earlier run for this SHA; not run again")
        else:
            found = cluster.read_batch(kind, namespace, template)
            if found is None:
                raise PreDeployError(f"pre-deploy template {app.pre_deploy} not found in namespace {namespace} "
                                     f"(apps.{app.name}.pre_deploy); create it, or remove the key")
            body = job_from_template(found, ref=app.pre_deploy, app=app.name, sha=target.sha,
                                     container=target.container, image=image, annotations=annotations)
            try:
                job = cluster.create_job(body)
                detail = f"created from {app.pre_deploy}, image {image}"
            except KubeConflictError:  # another run created it a moment ago: wait for that one
                job = cluster.read_batch("Job", namespace, name)
                detail = "created by another run a moment ago; waiting for it"
            log.info("pre_deploy.started", env=run.change.env, app=app.name, job=name, image=image)
            run.events.note(self.clock(), RolloutEventKind.PRE_DEPLOY, f"job/{name}: {detail}")
        self._wait(run, name, job)

    def _wait(self, run: AppRun, name: str, job: dict[str, Any] | None) -> None:
        target = run.change.target
        assert target is not None
        gap = min(0.1, self.poll_interval)
        while True:
            if job is None:
                raise PreDeployError(f"pre-deploy job/{name} in namespace {run.change.namespace} was deleted "
                                     "while deployctl waited for it")
            state = job_state(job)
            if state.complete:
                run.events.note(self.clock(), RolloutEventKind.PRE_DEPLOY, f"job/{name}: complete")
                return
            if state.failed:
                run.events.note(self.clock(), RolloutEventKind.PRE_DEPLOY, f"job/{name}: failed: {state.reason}")
                raise PreDeployError(f"pre-deploy job/{name} failed: {state.reason}; the rollout did not start "
                                     f"(delete job/{name} to run it again)")
            left = self.deadline - time.monotonic()
            if left <= 0:
                active = int((job.get("status") or {}).get("active") or 0)
                raise PreDeployError(f"pre-deploy job/{name} did not complete before the run's timeout "
                                     f"({active} pod(s) active); the rollout did not start")
            time.sleep(min(gap, left))
            gap = min(gap * 2, self.poll_interval * 4, _MAX_GAP)
            # through the run's clusters each time: a run that must stop (lost lease or lock) stops here too
            job = self.clusters(target.context).read_batch("Job", run.change.namespace, name)
