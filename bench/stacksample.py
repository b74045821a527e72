"""Run a deployctl command with a sampling profiler of every thread (cProfile sees only the main one; py-spy
is not installed): each 20 ms the innermost deployctl frames of every thread are counted, and every 10 s
the counts, most frequent first, are written to $DEPLOYCTL_STACKS (a replica is SIGKILLed by the bench).

    DEPLOYCTL_STACKS=/tmp/stacks.txt python bench/stacksample.py watch ...
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import Counter

OUT = os.environ["DEPLOYCTL_STACKS"]
counts: Counter[str] = Counter()


def _where(frame) -> str:
    """The thread's stack as its last 4 frames in deployctl (or the innermost frame outside it)."""
    frames = traceback.extract_stack(frame)
    ours = [f for f in frames if "/deployctl/" in f.filename]
    inner = frames[-1]
    tail = " < ".join(f"{f.filename.rsplit('/deployctl/', 1)[-1]}:{f.lineno}:{f.name}" for f in reversed(ours[-4:]))
    return f"[{inner.name}] {tail}"


def _sample() -> None:
    me = threading.get_ident()
    last = time.monotonic()
    while True:
        time.sleep(0.02)
        for ident, frame in sys._current_frames().items():
            if ident != me:
                counts[_where(frame)] += 1
        if time.monotonic() - last > 10:
            last = time.monotonic()
            with open(OUT + ".tmp", "w") as out:
                out.writelines(f"{n}\t{where}\n" for where, n in counts.most_common(60))
            os.replace(OUT + ".tmp", OUT)


threading.Thread(target=_sample, daemon=True).start()
from deployctl._entry import run  # noqa: E402

sys.argv[0] = "deployctl"
sys.exit(run())
