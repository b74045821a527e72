"""Rate limits for log lines that outsiders can cause (one per webhook request, per refused connection).

A flood of bad requests must not grow the log without bound: each kind of line gets a token
bucket (``burst`` lines at once, then ``rate`` a second); lines over it are counted, not
written, and the next line written says how many were left out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_KEYS = 256


@dataclass
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0


class RateLimiter:
    """Per-key token buckets; :meth:`allow` says whether to write a line now."""

    def __init__(self, *, rate: float = 2.0, burst: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, int]:
        """(write this line?, lines of this key left out since the last one written)."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= MAX_KEYS:
                    self._buckets.clear()
                bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens < 1.0:
                bucket.suppressed += 1
                return False, bucket.suppressed
            bucket.tokens -= 1.0
            suppressed, bucket.suppressed = bucket.suppressed, 0
            return True, suppressed
