"""Serving the controller: its options, the HTTP listener (webhooks, metrics, health, dashboard) and the worker thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from deployctl import settings
from deployctl.controller.httpserver import ServerLimits
from deployctl.controller.loop import Controller, ControllerSettings
from deployctl.controller.metrics import ControllerMetrics
from deployctl.edges.audit import url as audit_location
from deployctl.edges.git.mirror import Mirror
from deployctl.edges.kube.cluster import Cluster
from deployctl.edges.kube.lease import LeaderElector, LeaseConfig
from deployctl.edges.kube.shards import ShardConfig, SlotLeases
from deployctl.errors import InvalidInputError
from deployctl.model.audit_target import AUDIT_DEFAULT, AuditTarget
from deployctl.model.vocabulary import ExitCode, Trigger
from deployctl.reconcile.observe import ClusterPool
from deployctl.reconcile.outcome import ReconcileResult
from deployctl.ui.auth import UiAuth

if TYPE_CHECKING:
    from deployctl.ui.data import OverlaySource

log = structlog.get_logger(__name__)


def identity_default() -> str:
    """``<hostname>-<pid>``: the pod name in a cluster, unique enough for two processes on one host."""
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


def in_cluster_namespace(default: str = "default") -> str:
    """The namespace this pod runs in ($POD_NAMESPACE or the service account's), else ``default``."""
    import os

    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or default
    except OSError:
        return default


def advertise_url(listen_host: str, port: int, *, environ: dict[str, str] | None = None) -> str | None:
    """Where other replicas reach this one: ``http://$POD_IP:<port>``, else the listen address when it
    is a single host; None when neither is known (forwarding to this replica is then impossible)."""
    import os

    env = os.environ if environ is None else environ
    host = env.get("POD_IP") or ("" if listen_host in ("0.0.0.0", "::", "") else listen_host)  # noqa: S104
    if not host:
        return None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def split_namespaces(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(settings.split_names(values))


@dataclass(frozen=True)
class WatchOptions:
    """Everything ``deployctl watch`` needs; see :func:`serve`."""

    repo: str
    mirror_dir: Path
    settings: ControllerSettings
    listen_host: str = "0.0.0.0"  # noqa: S104 - in a pod the webhook must be reachable from the Service
    listen_port: int = 8080
    audit: AuditTarget = AUDIT_DEFAULT
    kubeconfig: str | None = None
    context: str | None = None
    lease: LeaseConfig | None = None
    shards: ShardConfig | None = None  # share the apps across replicas by slot Leases (instead of one leader)
    webhook_secret: bytes | None = None
    shutdown_timeout: float = 20.0
    limits: ServerLimits = ServerLimits()
    ui_auth: UiAuth | None = None  # serve the dashboard (/ui/, /api/v1/) on the same listener; None: do not
    ui_overlay: OverlaySource | None = None  # the product metric the dashboard's timeline draws


def serve(options: WatchOptions) -> int:
    """Run the controller until SIGTERM or SIGINT; returns the process exit code (0 on a clean stop)."""
    import asyncio

    return asyncio.run(_serve(options))


async def _serve(options: WatchOptions) -> int:
    import asyncio
    import signal

    from deployctl.controller import httpserver
    from deployctl.controller.forward import Forwarder
    from deployctl.controller.webhook import SyncTarget, make_app

    metrics = ControllerMetrics()
    mirror = Mirror(options.repo, options.mirror_dir, branch=options.settings.branch)
    pool = ClusterPool(kubeconfig=options.kubeconfig, context=options.context)
    if options.shards is not None and not options.audit.off and not (
            options.audit.url or audit_location.default_audit_url()).startswith(("postgresql://", "postgres://")):
        raise InvalidInputError("--shards runs several replicas on one audit history: give the PostgreSQL audit store "
                                "(--audit postgresql://...); a SQLite file cannot be shared between replicas")
    store = audit_location.open_target(options.audit)
    elector: LeaderElector | None = None
    leases: SlotLeases | None = None
    controller: Controller
    if options.shards is not None:
        from deployctl.controller.shards import ShardCollector, ShardRuns

        leases = SlotLeases(Cluster(kubeconfig=options.kubeconfig, context=options.context, pool_size=10),
                            options.shards, busy=lambda slot: runs.busy(slot),
                            on_claimed=lambda slots: controller.request_sync(Trigger.WATCH),
                            on_announced=lambda sha: controller.request_sync(Trigger.WEBHOOK, sha=sha))
        runs = ShardRuns(leases)
        metrics.registry.register(ShardCollector(leases, runs))
        controller = Controller(mirror, pool, settings=options.settings, store=store, metrics=metrics,
                                is_leader=leases.member, shards=runs)
        controller.leadership_started()
    elif options.lease is not None:
        elector = LeaderElector(
            Cluster(kubeconfig=options.kubeconfig, context=options.context, pool_size=2), options.lease,
            on_started=lambda: controller.leadership_started(),
            on_stopped=lambda: controller.leadership_stopped(),
        )
        controller = Controller(mirror, pool, settings=options.settings, store=store, metrics=metrics,
                                is_leader=elector.is_leader)
    else:
        controller = Controller(mirror, pool, settings=options.settings, store=store, metrics=metrics)
        metrics.leader.set(1)

    from deployctl.controller.cache import WorkloadCache

    # list + watch of the managed workloads: drift is seen as it happens, and observe reads memory
    cache = WorkloadCache(pool, on_drift=lambda _w: controller.request_sync(Trigger.DRIFT))
    from deployctl.app.verify import BackgroundVerifier, prometheus_from_settings

    prometheus = prometheus_from_settings()
    verifier = BackgroundVerifier(prometheus, store, pool, repo_path=str(mirror.path)) \
        if prometheus is not None and store is not None else None

    def reconciled(result: ReconcileResult) -> None:
        cache.track(result.plan)
        if verifier is not None:  # in the background: the loop and the other apps do not wait for it
            verifier.submit(result)

    controller.on_reconciled = reconciled

    forwarder = None
    if elector is not None and options.lease is not None:
        forwarder = Forwarder(leader=elector.leader_address, identity=options.lease.identity,
                              own_address=options.lease.address, secret=options.webhook_secret)
    target: SyncTarget = controller
    if leases is not None:
        from deployctl.controller.shards import ShardSyncTarget

        target = ShardSyncTarget(controller, leases)  # a push taken here is announced to the other replicas
    app = make_app(target, secret=options.webhook_secret, branch=options.settings.branch, metrics=metrics,
                   limits=options.limits, forwarder=forwarder)
    if options.ui_auth is not None:  # the dashboard, from the controller's own mirror, store and clusters
        from deployctl.ui.data import Dashboard, RepoView
        from deployctl.ui.server import add_routes

        add_routes(app, Dashboard(RepoView(mirror.path, mirror=mirror, fetch_every=None), store=store,
                                  clusters=pool, allowed_namespaces=options.settings.runs.selection.allowed_namespaces,
                                  overlay=options.ui_overlay),
                   options.ui_auth)
    limits = httpserver.fit_to_fd_limit(options.limits)
    runner, _ = await httpserver.start(app, host=options.listen_host, port=options.listen_port, limits=limits)
    log.info("http.listening", host=options.listen_host, port=options.listen_port,
             webhooks="enabled" if options.webhook_secret else "disabled (no secret: every hook gets 401)",
             advertised=options.lease.address if options.lease else None,
             max_connections=limits.max_connections)

    loop = asyncio.get_running_loop()
    stop_signal = asyncio.Event()

    def on_signal(name: str) -> None:
        controller.stop(name)
        stop_signal.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    worker = threading.Thread(target=controller.run, name="deployctl-controller", daemon=True)
    worker.start()
    lease_thread = None
    if elector is not None:
        lease_thread = threading.Thread(target=elector.run, name="deployctl-lease", daemon=True)
        lease_thread.start()
    if leases is not None:
        threading.Thread(target=leases.run, name="deployctl-shards", daemon=True).start()

    await stop_signal.wait()
    # Stop acting first (done by controller.stop), then let the worker close what it started.
    await loop.run_in_executor(None, worker.join, options.shutdown_timeout)
    clean = not worker.is_alive()
    if not clean:
        log.error("controller.shutdown_timeout", seconds=options.shutdown_timeout)
    if elector is not None:
        elector.stop()
        await loop.run_in_executor(None, elector.release)
    if leases is not None:
        await loop.run_in_executor(None, leases.release)
    await runner.cleanup()
    cache.close()
    if verifier is not None:
        verifier.close()
    if store is not None:
        store.close()
    log.info("controller.exited", clean=clean)
    return ExitCode.OK if clean else ExitCode.FAILED
