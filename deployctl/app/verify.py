"""Verify deploys against their metrics: measure each check of the app on Prometheus over its window, record
the result as its own audit record tied to the attempt (the rollout's record is never rewritten), then do what
the environment says on failure (notify, freeze, or a roll-forward commit; never an automatic rollback).

Shared by ``deployctl reconcile --verify`` (CI waits), ``deployctl verify`` (by hand) and the controller
(:class:`BackgroundVerifier`: in the background, never holding up other apps).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog

from deployctl import settings
from deployctl.edges.kube.cluster import Cluster
from deployctl.edges.metrics.prometheus import Prometheus, PrometheusError, PrometheusUnreachable
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.model.audit import AuditStore, current_actor
from deployctl.model.config import AppConfig, Config
from deployctl.model.duration import DurationError, parse_duration
from deployctl.model.state import DesiredState
from deployctl.model.verification import (
    ALERT,
    Check,
    Measurement,
    OnFailure,
    Verification,
    VerifyResult,
    fill,
)
from deployctl.model.vocabulary import Result
from deployctl.reconcile.outcome import ReconcileResult
from deployctl.rules import verification as rules

log = structlog.get_logger(__name__)

_VERIFIED_ROLLOUTS = (Result.SUCCEEDED,)
_IDS_PER_QUERY = 500  # the stores answer at most this many attempt ids per query


def prometheus_from_settings(environ: Mapping[str, str] | None = None) -> Prometheus | None:
    """The Prometheus of ``DEPLOYCTL_PROMETHEUS_URL`` (with its token and deadline), or None when unset."""
    url = settings.PROMETHEUS_URL.get(environ)
    if url is None:
        return None
    timeout = 10.0
    text = settings.PROMETHEUS_TIMEOUT.get(environ)
    if text is not None:
        try:
            timeout = parse_duration(text, what=settings.PROMETHEUS_TIMEOUT.name).total_seconds()
        except DurationError as exc:
            raise InvalidInputError(str(exc)) from exc
    return Prometheus(url, token=settings.PROMETHEUS_TOKEN.get(environ), timeout=timeout)


@dataclass(frozen=True)
class Subject:
    """The deploy attempt to verify."""

    attempt_id: int
    env: str
    app: str
    namespace: str
    sha: str


@dataclass(frozen=True)
class VerifyRun:
    """What a verification needs besides its subject: where to read, where to record, and the way to wait."""

    prometheus: Prometheus
    store: AuditStore
    trigger: str = "manual"
    stop: threading.Event | None = None  # set: stop waiting, record what was measured so far as failed
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class VerifyReport:
    """A recorded verification and what was done about a failure."""

    verification: Verification
    action: str = ""  # e.g. "froze web in staging", "wrote commit abc to roll forward to def"

    def as_dict(self) -> dict[str, object]:
        return {**self.verification.as_dict(), "action": self.action}


class Stopped(DeployctlError):
    """The verification was asked to stop before its window ended."""


def measure(prometheus: Prometheus, check: Check, subject: Subject, *, at: datetime) -> tuple[str, Measurement]:
    """One measurement of one check (the query as sent, and what it read). Never raises for Prometheus:
    an unreachable or refusing Prometheus is a failed measurement that says so."""
    names = {"app": subject.app, "env": subject.env, "namespace": subject.namespace, "sha": subject.sha}
    query = check.query if check.kind == ALERT else fill(check.query, **names)
    try:
        if check.kind == ALERT:
            firing = prometheus.firing_alerts(check.query)
            return query, rules.measure_alert(check, firing, app=subject.app, env=subject.env,
                                              namespace=subject.namespace, at=at)
        samples = prometheus.instant(query)
    except PrometheusUnreachable as exc:
        return query, rules.failed_measurement(str(exc), at=at, unreachable=True)
    except PrometheusError as exc:
        return query, rules.failed_measurement(str(exc), at=at, unreachable=False)
    return query, rules.measure_query(check, [s.value for s in samples], at=at)


def verify(subject: Subject, checks: Sequence[Check], run: VerifyRun) -> Verification:
    """Measure ``checks`` over their windows and record the result; returns it (with its id)."""
    started_at = run.clock()
    start = run.monotonic()
    measured: list[list[Measurement]] = [[] for _ in checks]
    queries = [c.query for c in checks]
    stopped = False
    for offset, index in rules.schedule(checks):
        check = checks[index]
        if any(rules.decided(c, m) for c, m in zip(checks, measured, strict=True)):
            break  # a check has failed more often than it may: the verdict is known
        wait = start + offset - run.monotonic()
        if wait > 0 and _wait(run, wait):
            stopped = True
            break
        queries[index], m = measure(run.prometheus, check, subject, at=run.clock())
        measured[index].append(m)
        log.info("verify.measured", env=subject.env, app=subject.app, check=check.name, value=m.value,
                 passed=m.passed, error=m.error)
    outcomes = tuple(rules.outcome(c, q, m) for c, q, m in zip(checks, queries, measured, strict=True))
    result, reason = rules.verdict([o for o in outcomes if o.measurements] or outcomes)
    if stopped and result == VerifyResult.VERIFIED:  # not every measurement was taken: not verified
        result, reason = VerifyResult.FAILED, f"stopped before the window ended ({reason})"
    verification = Verification(
        attempt_id=subject.attempt_id, env=subject.env, app=subject.app, sha=subject.sha, result=result,
        reason=reason, checks=outcomes, started_at=started_at, finished_at=run.clock(), trigger=run.trigger,
    )
    verification_id = run.store.record_verification(verification)
    log.info("verify.done", env=subject.env, app=subject.app, sha=subject.sha, result=str(result), reason=reason)
    return Verification(**{**verification.__dict__, "id": verification_id})


def _wait(run: VerifyRun, seconds: float) -> bool:
    """Wait; True when asked to stop."""
    if run.stop is not None:
        return run.stop.wait(seconds)
    time.sleep(seconds)
    return False


def verifications_of(store: AuditStore, attempt_ids: Sequence[int]) -> list[Verification]:
    """Every verification of these attempts, newest first (asked in slices the store answers whole), each one
    whose row does not verify in the audit chain with why (``chain_unverified``)."""
    ids = list(dict.fromkeys(attempt_ids))
    found: list[Verification] = []
    for start in range(0, len(ids), _IDS_PER_QUERY):
        found += store.verifications(attempt_ids=ids[start : start + _IDS_PER_QUERY])
    untrusted = store.unverified_verifications([v.id for v in found if v.id is not None]) if found else {}
    found = [replace(v, chain_unverified=untrusted[v.id]) if v.id in untrusted else v for v in found]
    return sorted(found, key=lambda v: (v.finished_at, v.id or 0), reverse=True)


def latest_verifications(store: AuditStore, attempt_ids: Sequence[int]) -> dict[int, Verification]:
    """The newest verification of each attempt that has one."""
    out: dict[int, Verification] = {}
    for v in verifications_of(store, attempt_ids):
        out.setdefault(v.attempt_id, v)
    return out


# --- after a failure ---------------------------------------------------------------------------


def on_failure(
    verification: Verification, desired: DesiredState, *, store: AuditStore, clusters: Callable[[str | None], Cluster] | None,
    repo: str | None, trigger: str = "manual",
) -> str:
    """Do what the environment says when a verification failed; returns what was done, in words."""
    config = desired.config
    env = config.environments.get(verification.env) if config else None
    if verification.ok or env is None or env.on_verification_failure == OnFailure.NOTIFY:
        return ""
    app, env_name = verification.app, verification.env
    try:
        if env.on_verification_failure == OnFailure.FREEZE:
            if clusters is None:
                return "not frozen: no cluster access here"
            from deployctl.app.suspend import SuspendRequest, set_suspended

            request = SuspendRequest(
                suspend=True, reason=f"verification of {verification.sha[:12]} failed: {verification.reason}"[:500],
                actor=current_actor(), now=datetime.now(UTC), trigger=trigger)
            set_suspended(desired, clusters, request, envs=[env_name], apps=[app], store=store)
            return f"froze {app} in {env_name} until a person runs deployctl resume --env {env_name} --app {app}"
        found = store.verifications(env=env_name, app=app, limit=500)
        untrusted = store.unverified_verifications([v.id for v in found if v.id is not None]) if found else {}
        # only verifications whose rows verify in the audit chain may choose the SHA rolled forward to
        target = rules.last_verified([v for v in found if v.id not in untrusted], env=env_name, app=app,
                                     besides=verification.sha)
        if target is None:
            return f"no roll-forward: no earlier SHA of {app} was verified in {env_name}"
        if repo is None:
            return f"no roll-forward commit written (no work tree here): the last verified SHA is {target[:12]}"
        return roll_forward(verification, repo, target=target)
    except DeployctlError as exc:
        log.error("verify.on_failure_failed", env=env_name, app=app, error=str(exc))
        return f"{env.on_verification_failure} failed: {exc}"


def roll_forward(verification: Verification, repo: str, *, target: str) -> str:
    """Propose the last verified SHA ``target``: a pull request on the forge when one is configured
    (the forge settings, as for ``rollback --open-pr``; a second failure updates it), else (or when the forge
    refuses) a local commit for a person to push. Either way a person reviews it; nothing is applied here."""
    from deployctl.app.promote import RollbackChoice, propose, rollback_app, rollback_change
    from deployctl.edges.forge import ForgeError, ForgeSettings

    env, app = verification.env, verification.app
    message = f"roll forward: verification of {verification.sha[:12]} failed: {verification.reason}"[:300]
    choice = RollbackChoice(to=target)
    unopened = ""
    try:
        forge = ForgeSettings.from_env()
    except ForgeError as exc:
        forge, unopened = None, f"no pull request ({exc}); "
    if forge is not None:
        promotion, files, text = rollback_change(repo, app, env=env, choice=choice, message=message)
        body = (f"Verification of `{verification.sha}` in **{env}** failed: {verification.reason}\n\n"
                f"This deploys the last SHA of {app} verified there, `{promotion.new_sha}`. deployctl never rolls "
                "back on its own: review and merge to apply it.\n")
        try:
            opened = propose(repo, files, message=text, branch=f"deployctl/roll-forward-{env}-{app}", forge=forge,
                             body=lambda base, head: body)
        except DeployctlError as exc:  # the forge or the push refused: the local commit still proposes it
            unopened = f"no pull request ({exc}); "
        else:
            log.warning("verify.rolled_forward", env=env, app=app, to=target, pull_request=opened.url)
            return (f"{'opened' if opened.created else 'updated'} pull request #{opened.number} ({opened.url}) "
                    f"deploying the last verified SHA {promotion.new_sha[:12]} to {env}, for review")
    promotion, commit = rollback_app(repo, app, env=env, choice=choice, commit=True, message=message)
    log.warning("verify.rolled_forward", env=env, app=app, to=target, commit=commit)
    return (f"{unopened}wrote commit {(commit or '')[:12]} deploying the last verified SHA "
            f"{promotion.new_sha[:12]} to {env}; push it for review")


# --- the three callers -----------------------------------------------------------------------


def subjects(result: ReconcileResult, config: Config) -> list[tuple[Subject, tuple[Check, ...]]]:
    """The rollouts of a reconcile that succeeded, were recorded, and have checks in their environment."""
    out = []
    for o in result.outcomes:
        app: AppConfig | None = config.apps.get(o.app)
        env = config.environments.get(o.env)
        if o.result not in _VERIFIED_ROLLOUTS or o.audit_id is None or app is None or env is None or not o.new_sha:
            continue
        checks = app.checks_for(o.env)
        if checks:
            out.append((Subject(o.audit_id, o.env, o.app, env.namespace, o.new_sha), checks))
    return out


def verify_reconciled(
    result: ReconcileResult, desired: DesiredState, run: VerifyRun, *, clusters: Callable[[str | None], Cluster] | None,
    repo: str | None,
) -> list[VerifyReport]:
    """Verify every rollout of ``result`` that has checks, in parallel, then act on failures."""
    if desired.config is None:
        return []
    todo = subjects(result, desired.config)
    if not todo:
        return []
    # the threads mostly wait out windows: many, so that one big wave is verified side by side
    with ThreadPoolExecutor(max_workers=min(len(todo), 64), thread_name_prefix="deployctl-verify") as pool:
        done = list(pool.map(lambda item: verify(item[0], item[1], run), todo))
    return [VerifyReport(v, on_failure(v, desired, store=run.store, clusters=clusters, repo=repo,
                                       trigger=run.trigger)) for v in done]


def verify_latest(
    desired: DesiredState, run: VerifyRun, *, env: str, app: str, sha: str | None = None,
    clusters: Callable[[str | None], Cluster] | None = None, repo: str | None = None,
) -> VerifyReport:
    """``deployctl verify``: verify the newest succeeded rollout of ``app`` in ``env`` (of ``sha`` when given)."""
    config = desired.config
    if config is None:
        raise InvalidInputError("deployctl.yaml is missing or invalid; run deployctl validate")
    if env not in config.environments:
        raise InvalidInputError(f"unknown environment {env!r}; deployctl.yaml has {', '.join(sorted(config.environments))}")
    if app not in config.apps:
        raise InvalidInputError(f"unknown app {app!r}; deployctl.yaml has {', '.join(sorted(config.apps))}")
    checks = config.apps[app].checks_for(env)
    if not checks:
        raise InvalidInputError(f"apps.{app}.verify has no check for environment {env}; add one to deployctl.yaml")
    records = [r for r in run.store.query(env=env, app=app, limit=200) if r.result in _VERIFIED_ROLLOUTS
               and (sha is None or r.attempt.new_sha.startswith(sha.lower()))]
    if not records:
        which = f" of {sha}" if sha else ""
        raise InvalidInputError(f"no succeeded rollout{which} of {app} in {env} in the audit history {run.store.url}")
    record = records[0]
    subject = Subject(record.id, env, app, config.environments[env].namespace, record.attempt.new_sha)
    verification = verify(subject, checks, run)
    return VerifyReport(verification, on_failure(verification, desired, store=run.store, clusters=clusters,
                                                 repo=repo, trigger=run.trigger))


class BackgroundVerifier:
    """The controller's verifications: each succeeded rollout is verified on a worker thread, so the loop and
    the other apps never wait for a window. The checks are read from the deploy repo at the run's commit.
    Roll-forward has no work tree in the controller: it names the last verified SHA instead of committing."""

    def __init__(self, prometheus: Prometheus, store: AuditStore, clusters: Callable[[str | None], Cluster] | None,
                 *, repo_path: str, workers: int = 8) -> None:
        self.prometheus = prometheus
        self.store = store
        self.clusters = clusters
        self.repo_path = repo_path
        self.stop_event = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deployctl-verify")
        self._futures: list[Future[list[VerifyReport]]] = []
        self._lock = threading.Lock()

    def submit(self, result: ReconcileResult, *, trigger: str = "watch") -> None:
        """Verify the rollouts of ``result`` that succeeded (those with checks), in the background."""
        if self.stop_event.is_set() or result.plan.deploy_commit is None or not any(
            o.result in _VERIFIED_ROLLOUTS and o.audit_id is not None for o in result.outcomes
        ):
            return
        future = self._pool.submit(self._verify, result, trigger)
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()] + [future]

    def _verify(self, result: ReconcileResult, trigger: str) -> list[VerifyReport]:
        from deployctl.edges.git.repo import read_desired_state

        try:
            desired = read_desired_state(self.repo_path, ref=result.plan.deploy_commit or "HEAD")
            run = VerifyRun(self.prometheus, self.store, trigger=trigger, stop=self.stop_event)
            reports = verify_reconciled(result, desired, run, clusters=self.clusters, repo=None)
        except DeployctlError as exc:
            log.error("verify.failed_to_run", commit=result.plan.deploy_commit, error=str(exc))
            return []
        for report in reports:
            if report.action:
                log.warning("verify.action", env=report.verification.env, app=report.verification.app,
                            action=report.action)
        return reports

    def wait(self, timeout: float) -> bool:
        """Wait for the verifications under way (tests, shutdown); True when all are done."""
        deadline = time.monotonic() + timeout
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - the worker logs its own failures; this only waits
                return False
        return True

    def close(self, *, grace: timedelta = timedelta(seconds=5)) -> None:
        """Stop waiting for windows (what is under way is recorded as not verified) and end the workers."""
        self.stop_event.set()
        self.wait(grace.total_seconds())
        self._pool.shutdown(wait=False, cancel_futures=True)
