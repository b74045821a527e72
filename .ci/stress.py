"""The integration tests under load: ``make test-stress`` (goal: 0 failures).

    .venv/bin/python .ci/stress.py [--rounds 3] [--busy N] [PYTEST ARGS...]

Starts one busy-loop process per core (``--busy``), runs pytest (by default ``-m integration``)
``--rounds`` times in a row beside them, each round with its own ``--basetemp`` and JUnit report,
then prints the failures per test over all rounds and exits 1 if there was any. The busy loops
are bounded: each ends by itself after ``--busy-limit`` seconds, dies with this script
(PR_SET_PDEATHSIG), and is killed when the rounds are over.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_busy(count: int, limit: float) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", BUSY.format(limit=limit)],  # noqa: S603 - our own code
                             preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL) for _ in range(count)]


def stop_busy(loops: list[subprocess.Popen[bytes]]) -> None:
    for proc in loops:
        if proc.poll() is None:
            proc.kill()
    for proc in loops:
        proc.wait(10)


def failures(report: Path) -> tuple[int, list[str]]:
    """(tests run, ids of the failed or errored tests) of one JUnit report."""
    if not report.exists():
        return 0, ["<no report: pytest did not finish>"]
    root = ET.parse(report).getroot()  # noqa: S314 - our own pytest's report
    run, failed = 0, []
    for case in root.iter("testcase"):
        run += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return run, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="busy-loop processes (one per core)")
    parser.add_argument("--busy-limit", type=float, default=3 * 3600, help="seconds after which a busy loop ends")
    parser.add_argument("--out", type=Path, default=None, help="where the reports go (default: a temp dir)")
    args, pytest_args = parser.parse_known_args()
    pytest_args = pytest_args or ["-m", "integration"]
    out = args.out or Path(tempfile.mkdtemp(prefix="deployctl-stress-"))
    out.mkdir(parents=True, exist_ok=True)
    counts: collections.Counter[str] = collections.Counter()
    summary: list[str] = []
    loops = start_busy(args.busy, args.busy_limit)
    print(f"stress: {args.busy} busy loops; {args.rounds} rounds of pytest {' '.join(pytest_args)}; reports in {out}",
          flush=True)
    try:
        for n in range(1, args.rounds + 1):
            report = out / f"round-{n}.xml"
            started = time.monotonic()
            code = subprocess.call([  # noqa: S603 - our own pytest
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={out / f'tmp-{n}'}",
                f"--junitxml={report}", *pytest_args], cwd=ROOT)
            run, failed = failures(report)
            counts.update(failed)
            summary.append(f"round {n}: exit {code}, {run} tests, {len(failed)} failed, "
                           f"{time.monotonic() - started:.0f} s")
            if code != 0 and not failed:  # no test failed, yet the run did (leftovers, a broken session)
                counts[f"<round {n}: pytest exit {code}, see its output>"] += 1
    finally:
        stop_busy(loops)
    print("\n== stress summary")
    for line in summary:
        print(line)
    print(f"failures per test over {args.rounds} rounds ({sum(counts.values())} in all):")
    for test, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {count}  {test}")
    if not counts:
        print("  none")
    return 1 if counts else 0


if __name__ == "__main__":
    sys.exit(main())
