"""One reconcile run composed from its parts, the same for the CLI and the controller:
desired state -> audit recorder -> close interrupted -> policy (gates, approvals, freezes) -> digest pins ->
reconcile. The outer run (guards, records) is here; the inner one (observe, apply, wait) is the reconciler's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from deployctl.edges.audit import url as audit_location
from deployctl.edges.git.repo import local_sources, read_desired_state
from deployctl.model.audit import AuditStore
from deployctl.model.state import DesiredState
from deployctl.reconcile import policy
from deployctl.reconcile.artifacts import registry_pinner
from deployctl.reconcile.observe import ClusterFor, ClusterPool
from deployctl.reconcile.options import ReconcileOptions
from deployctl.reconcile.outcome import Progress, ReconcileResult
from deployctl.reconcile.reconciler import Reconciler
from deployctl.reconcile.recorder import AuditRecorder
from deployctl.reconcile.sink import AuditSink


def run_once(
    desired: DesiredState,
    clusters: ClusterFor,
    *,
    repo_path: str | Path,
    options: ReconcileOptions,
    store: AuditStore | None,
    trigger: str,
    close_interrupted: bool = True,
    gates_from_audit: bool = True,
    guard_sink: Callable[[AuditSink], AuditSink] | None = None,
    refusals: Mapping[tuple[str, str], str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> ReconcileResult:
    """Reconcile ``desired`` once, recording into ``store`` (None: no audit history).

    ``gates_from_audit=False`` checks promotion gates against the deploy files' git history instead of
    the store; ``guard_sink`` wraps the recorder (the controller's stop-aware wrapper); ``refusals`` are
    extra (env, app) -> reason refusals on top of the policy's.
    """
    sink: AuditSink | None = None
    if store is not None:
        recorder = AuditRecorder(store, repo_path=repo_path, trigger=trigger,
                                 sources=local_sources(repo_path, desired.config))
        if close_interrupted:
            recorder.close_interrupted()
        sink = guard_sink(recorder) if guard_sink is not None else recorder
    refused, sink = policy.for_reconcile(
        desired, repo=repo_path, store=store if gates_from_audit else None, sink=sink, override_freeze=options.override_freeze,
        reason=options.override_reason, extra=refusals,
    )
    pinner = registry_pinner(desired, store, allow_retagged=options.allow_retagged)
    return Reconciler(desired, clusters, options, audit=sink, refusals=refused, pinner=pinner,
                      on_progress=on_progress).run()


def run_reconcile(
    *,
    repo: str,
    ref: str = "HEAD",
    options: ReconcileOptions | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    audit_url: str | None = "",
    trigger: str = "manual",
    refusals: Mapping[tuple[str, str], str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    desired: DesiredState | None = None,
) -> ReconcileResult:
    """The reconcile command without click: read ``repo`` at ``ref``, reconcile, record.

    ``audit_url=None`` disables the audit history; ``""`` means the default store. ``desired`` skips the
    read when the caller has already read the repo (to print its problems first).
    """
    desired = desired if desired is not None else read_desired_state(repo, ref=ref)
    store = audit_location.open_store(audit_url or None) if audit_url is not None else None
    try:
        return run_once(
            desired, ClusterPool(kubeconfig=kubeconfig, context=context), repo_path=repo,
            options=options or ReconcileOptions(), store=store, trigger=trigger, refusals=refusals,
            gates_from_audit=bool(audit_url),  # the default local store is not evidence for a gate
            on_progress=on_progress,
        )
    finally:
        if store is not None:
            store.close()
