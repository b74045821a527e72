"""Deadlines for blocking sockets: an ``Alarm`` shuts a connection's socket down when its time is up.

A per-read timeout never fires on a server that sends a byte just before each read would time out;
shutting the socket down from outside makes the blocked connect, TLS handshake or read return at once.
One thread serves every alarm.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import socket
import threading
import time


class Alarm:
    """Shuts a connection's socket down at a deadline so a blocked connect, handshake or read returns at once."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._conn: http.client.HTTPConnection | None = conn
        self._lock = threading.Lock()
        _WATCHDOG.arm(self, time.monotonic() + max(seconds, 0.0))

    def fire(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            self.fired = True
            sock = self._conn.sock  # during a TLS handshake still the plain socket
            if sock is None:
                return
            try:
                # the plain-socket shutdown also for TLS sockets: SSLSocket.shutdown would unwrap under a reader
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> bool:
        """Stop the alarm; True if it had already fired."""
        with self._lock:
            self._conn = None
            return self.fired


class _Watchdog:
    """One thread for every call's deadline (a timer thread per request would cost more than the request)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, alarm: Alarm, when: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), alarm))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is alarm:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, alarm = heapq.heappop(self._heap)
            alarm.fire()  # a cancelled alarm does nothing


_WATCHDOG = _Watchdog()
