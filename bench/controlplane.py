"""The local control plane: warm `localcluster up` time and idle memory.

    .venv/bin/python bench/controlplane.py [--runs 3] [--idle 20]

Builds (or reuses) the pinned binaries first; the cold build time is printed by
`deployctl --log-level info localcluster build` (see the README).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.teardown import on_signal_unwind  # noqa: E402
from deployctl.devtools.localcluster import build, controlplane, pins  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    on_signal_unwind()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds to idle before reading RSS")
    args = parser.parse_args()
    configure_logging("warning")
    build.build()
    print(f"pins: kubernetes {pins.KUBERNETES} (etcd from its go.mod), kwok {pins.KWOK}")
    times = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="deployctl-cp-") as tmp:
            started = time.perf_counter()
            state = controlplane.up(Path(tmp))
            times.append(time.perf_counter() - started)
            if i == args.runs - 1:
                time.sleep(args.idle)
                total = 0.0
                for name, pid in state.pids.items():
                    mib = rss_mib(pid)
                    total += mib
                    print(f"  idle RSS {name:24s} {mib:7.1f} MiB")
                print(f"  idle RSS {'total':24s} {total:7.1f} MiB (after {args.idle:.0f}s idle, one fake node)")
            controlplane.down(Path(tmp))
    print(f"warm `localcluster up` (until the API answers and the fake node is Ready): "
          f"median {statistics.median(times):.2f}s, runs {', '.join(f'{t:.2f}s' for t in times)}")


if __name__ == "__main__":
    main()
