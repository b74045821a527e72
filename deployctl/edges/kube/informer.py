"""An informer: the labelled workloads of one kind in one namespace, kept current by a watch.

One LIST gives the objects and a resourceVersion; one watch (label-selected on
``deployctl.dev/app``, with bookmarks) then streams every change. Whenever a stream ends (the
server's ``timeoutSeconds``, a watcher the server closed, a dropped connection, a restarted API
server) the watch is resumed from the last resourceVersion, without a LIST. A watch cache that
has not yet reached that resourceVersion (``504 Too large resource version``) is waited for with
backoff until the informer's ``deadline``. Only a ``410 Gone`` (the resourceVersion is too old),
or a cache still behind at the deadline, costs a new LIST. Reads are from memory:
:meth:`Informer.items` makes no API call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from deployctl.edges.kube.resources import RESOURCES, collection_path
from deployctl.edges.kube.transport import ClusterError, Transport
from deployctl.errors import DeployctlError, KubeGoneError, KubeTimeoutError, kube_error
from deployctl.model.workload import WORKLOAD_SELECTOR, Workload

log = structlog.get_logger(__name__)

WATCH_SECONDS = 300  # the server ends each watch after this; it is resumed without a LIST
CACHE_PATIENCE = 60.0  # without a deadline: how long a lagging watch cache is waited for before a LIST


class Source(Protocol):
    """What an informer needs from a cluster: its LIST and its transport (for the watch stream)."""

    transport: Transport

    def list_kind_at(self, namespace: str, kind: str, *, app_selector: str = WORKLOAD_SELECTOR) -> tuple[list[Workload], str]:
        ...


class Informer:
    """List + watch of one (namespace, kind). Start with :meth:`start` (does the first LIST, so the
    cache is complete when it returns), read with :meth:`items`, end with :meth:`stop`."""

    def __init__(self, cluster: Source, namespace: str, kind: str, *, selector: str = WORKLOAD_SELECTOR,
                 on_change: Callable[[Workload], None] | None = None, watch_seconds: int = WATCH_SECONDS,
                 deadline: float | None = None) -> None:
        if kind not in RESOURCES:
            raise ValueError(f"cannot watch kind {kind!r}")
        self.cluster = cluster
        self.namespace = namespace
        self.kind = kind
        self.selector = selector
        self.on_change = on_change
        self.watch_seconds = watch_seconds
        # time.monotonic() until which a watch cache behind our resourceVersion is waited for (e.g. the
        # rollout's deadline); None: CACHE_PATIENCE seconds per episode
        self.deadline = deadline
        self.resource_version = ""
        self.lists = 0  # LISTs made (1 + one per 410 Gone, or per watch cache still behind at the deadline)
        self.gone = 0  # 410 Gone answers (each cost a LIST)
        self.behind = 0  # 504 "too large resource version" answers (waited for, not listed)
        self.resumed = 0  # streams that ended or dropped and were resumed from the last resourceVersion
        self._reconnect = False
        self.watches = 0  # watch requests opened
        # the last failure; cleared when a watch stream opens again or a LIST succeeds
        self.error: DeployctlError | None = None
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
        backoff = _Backoff()
        relist = False
        behind_since: float | None = None
        while not self._stop.is_set():
            try:
                if relist:
                    self._relist()
                    relist = False
                opened = time.monotonic()
                self._watch_once()
                behind_since = None
                if self._stop.is_set():
                    return
                self.resumed += 1  # the server ended the stream (timeoutSeconds, or a watcher it closed)
                if time.monotonic() - opened < 1.0:  # ended at once: do not hammer the server
                    self._stop.wait(backoff.next())
                else:
                    backoff.reset()
            except _Gone:
                self.gone += 1
                log.info("watch.gone", namespace=self.namespace, kind=self.kind, rv=self.resource_version)
                relist = True
                behind_since = None
            except _TooNew:
                # The server's watch cache has not caught up with our resourceVersion yet (each answer already
                # waited 3 s for it). It will: a LIST now would be the polling a watch is for.
                self.behind += 1
                now = time.monotonic()
                behind_since = behind_since if behind_since is not None else now
                give_up = self.deadline if self.deadline is not None else behind_since + CACHE_PATIENCE
                log.info("watch.cache_behind", namespace=self.namespace, kind=self.kind, rv=self.resource_version,
                         waited=round(now - behind_since, 1))
                if now >= give_up:
                    relist = True
                    behind_since = None
                    self.deadline = None  # past the deadline: patience per episode from now on
                self._stop.wait(backoff.next())
            except DeployctlError as exc:  # dropped stream, refused, unreachable: resume after a pause
                if self._stop.is_set():
                    return
                self.error = exc
                self.resumed += 0 if relist else 1
                log.info("watch.dropped", namespace=self.namespace, kind=self.kind, error=str(exc),
                         rv=self.resource_version)
                self._stop.wait(backoff.next())

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
        except KubeGoneError as exc:
            raise _Gone from exc
        except KubeTimeoutError as exc:
            if "too large resource version" in str(exc).lower():
                raise _TooNew from exc
            if self._stop.is_set():
                return
            raise
        except ClusterError:
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
        if resp.status < 400:  # watching again from our resourceVersion: the items will be current
            self.error = None
        if self._stop.is_set():
            resp.shutdown()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone
            raise kube_error(f"watch {self.kind} in {self.namespace}: {code} {obj.get('message', '')}",
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


class _Backoff:
    """0.1 s, doubling to 5 s between retries of a failed watch; reset by a stream that ended normally."""

    def __init__(self, first: float = 0.1, ceiling: float = 5.0) -> None:
        self.first, self.ceiling, self.current = first, ceiling, first

    def next(self) -> float:
        pause, self.current = self.current, min(self.current * 2, self.ceiling)
        return pause

    def reset(self) -> None:
        self.current = self.first


class _Gone(Exception):  # noqa: N818 - a signal: the resourceVersion is too old (410)
    pass


class _TooNew(Exception):  # noqa: N818 - a signal: the server has not seen the resourceVersion yet (504)
    pass

