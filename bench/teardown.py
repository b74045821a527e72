"""Let a benchmark stopped by SIGTERM or SIGHUP tear down what it started.

Python's default for SIGTERM ends the process at once: ``finally`` blocks do not run, so a bench
killed by a CI timeout or ``kill`` left its control plane, PostgreSQL or replicas running. Raising
``SystemExit`` from the handler unwinds the stack instead, and the benches' ``finally`` blocks
(``controlplane.down`` and the like) run as they do on Ctrl-C.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _unwind(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once
    sys.exit(128 + signum)


def on_signal_unwind() -> None:
    """Call first thing in a bench's ``main``: SIGTERM and SIGHUP then run its cleanup."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _unwind)
