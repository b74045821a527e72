"""An informer: the labelled workloads of one kind in one namespace, kept current by a watch.

One LIST gives the objects and a resourceVersion; one watch (label-selected on
``deployctl.dev/app``, with bookmarks) then streams every change. When the server ends the
watch (``timeoutSeconds``) it is resumed from the last resourceVersion, without a LIST. Only a
``410 Gone`` (the resourceVersion is too old) or a dropped stream (e.g. a restarted API server)
costs a new LIST. Reads are from memory: :meth:`Informer.items` makes no API call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from deployctl.edges.kube.resources import RESOURCES, collection_path
from deployctl.edges.kube.transport import ClusterError, Transport
from deployctl.errors import DeployctlError
from deployctl.model.workload import APP_LABEL, Workload

log = structlog.get_logger(__name__)

WATCH_SECONDS = 300  # the server ends each watch after this; it is resumed without a LIST


class Source(Protocol):
    """What an informer needs from a cluster: its LIST and its transport (for the watch stream)."""

    transport: Transport

    def list_kind_at(self, namespace: str, kind: str, *, app_selector: str = APP_LABEL) -> tuple[list[Workload], str]:
        ...


class Informer:
    """List + watch of one (namespace, kind). Start with :meth:`start` (does the first LIST, so the
    cache is complete when it returns), read with :meth:`items`, end with :meth:`stop`."""

    def __init__(self, cluster: Source, namespace: str, kind: str, *, selector: str = APP_LABEL,
                 on_change: Callable[[Workload], None] | None = None, watch_seconds: int = WATCH_SECONDS) -> None:
        if kind not in RESOURCES:
            raise ValueError(f"cannot watch kind {kind!r}")
        self.cluster = cluster
        self.namespace = namespace
        self.kind = kind
        self.selector = selector
        self.on_change = on_change
        self.watch_seconds = watch_seconds
        self.resource_version = ""
        self.lists = 0  # LISTs made (1 + one per 410 Gone or dropped stream)
        self.gone = 0  # 410 Gone answers (each cost a LIST)
        self._reconnect = False
        self.watches = 0  # watch requests opened
        self.error: DeployctlError | None = None  # the last failure (cleared by a successful LIST)
        self._items: dict[str, Workload] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()

    def __repr__(self) -> str:
        return f"Informer({self.namespace}/{self.kind}, rv={self.resource_version})"

    # -- reading ------------------------------------------------------------------------------

    def items(self) -> dict[str, Workload]:
        """The current workloads by name (a copy; no API call)."""
        with self._lock:
            return dict(self._items)

    @property
    def watching(self) -> bool:
        """A watch stream is open."""
        return self._response is not None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, *, items: list[Workload] | None = None, resource_version: str = "") -> Informer:
        """List (or take ``items`` listed at ``resource_version`` by the caller), then watch."""
        if items is not None and resource_version:
            with self._lock:
                self._items = {w.name: w for w in items}
            self.resource_version = resource_version
            self.synced.set()
        else:
            self._relist()
        self._thread = threading.Thread(target=self._run, name=f"deployctl-watch-{self.namespace}-{self.kind}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        resp = self._response
        if resp is not None:
            try:
                resp.shutdown()  # unblocks the reading thread at once
            except Exception:  # noqa: BLE001,S110 - it is closing anyway
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def reconnect(self) -> None:
        """Close the current watch stream; the informer resumes from its last resourceVersion (a LIST
        only if the server answers ``410 Gone``). What a load balancer's idle timeout does; for tests."""
        self._reconnect = True
        resp = self._response
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:  # noqa: BLE001,S110 - it is closing anyway
                pass

    # -- internals ----------------------------------------------------------------------------

    def _relist(self) -> None:
        items, rv = self.cluster.list_kind_at(self.namespace, self.kind, app_selector=self.selector)
        self.lists += 1
        with self._lock:
            old = self._items
            self._items = {w.name: w for w in items}
        self.resource_version = rv
        self.error = None
        self.synced.set()
        if self.on_change is not None:
            for w in items:
                if old.get(w.name) != w:
                    self.on_change(w)

    def _run(self) -> None:
        backoff = 0.2
        relist = False
        too_new = 0
        while not self._stop.is_set():
            try:
                if relist:
                    self._relist()
                    relist = False
                self._watch_once()
                backoff, too_new = 0.2, 0
            except _Gone:
                self.gone += 1
                log.info("watch.gone", namespace=self.namespace, kind=self.kind, rv=self.resource_version)
                relist = True
            except _TooNew:  # the server's watch cache has not caught up with the LIST yet: watch again
                too_new += 1
                relist = too_new > 5
                self._stop.wait(0.2)
            except DeployctlError as exc:  # dropped stream, refused, unreachable: re-list after a pause
                if self._stop.is_set():
                    return
                self.error = exc
                log.info("watch.dropped", namespace=self.namespace, kind=self.kind, error=str(exc))
                relist = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _watch_once(self) -> None:
        self.watches += 1
        query = {"watch": "1", "labelSelector": self.selector, "allowWatchBookmarks": "true",
                 "resourceVersion": self.resource_version, "timeoutSeconds": str(self.watch_seconds)}
        stream = self.cluster.transport.stream(
            collection_path(self.kind, self.namespace), what=f"watch {self.kind} in {self.namespace}", query=query,
            timeout=self.watch_seconds + 30, on_open=self._opened,
        )
        try:
            for event in stream:
                if self._stop.is_set():
                    return
                self._apply(event)
        except ClusterError as exc:
            if exc.status == 410:
                raise _Gone from exc
            if exc.status == 504 and "too large resource version" in str(exc).lower():
                raise _TooNew from exc
            if self._stop.is_set():
                return
            raise
        except DeployctlError:
            if self._stop.is_set() or self._reconnect:
                return
            raise
        finally:
            self._response = None
            self._reconnect = False

    def _opened(self, resp: Any) -> None:
        self._response = resp
        if self._stop.is_set():
            resp.shutdown()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone
            raise ClusterError(f"watch {self.kind} in {self.namespace}: {code} {obj.get('message', '')}",
                               status=code if isinstance(code, int) else None)
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.resource_version = rv or self.resource_version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        w = Workload.from_object(obj, self.kind)
        with self._lock:
            if kind == "DELETED":
                self._items.pop(w.name, None)
            else:
                self._items[w.name] = w
        self.resource_version = rv or self.resource_version
        if self.on_change is not None:
            self.on_change(w)


class _Gone(Exception):  # noqa: N818 - a signal: the resourceVersion is too old (410)
    pass


class _TooNew(Exception):  # noqa: N818 - a signal: the server has not seen the resourceVersion yet (504)
    pass

