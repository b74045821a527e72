"""Regenerate the README's figures: run benchmarks and write their output, with date and command.

    .venv/bin/python bench/figures.py [--only NAME ...] [--list] [--print]   (make figures; make bench prints)

Every number in the README's "Figures" section lives between the markers
``<!-- figures:begin -->`` and ``<!-- figures:end -->`` and is written by this script, never by
hand: for each benchmark a heading, the exact command, the commit measured, the UTC date, the machine (cores, memory,
load average when it started), how long it ran, and what it printed, verbatim. ``--only`` reruns
some benchmarks and keeps the other sections as they were (each keeps its own date). A benchmark
that fails keeps its previous section and makes the script exit 1, so a stale figure is never
presented as new. The README is rewritten after each benchmark, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
SECTION = re.compile(r"^### `(?P<name>[^`]+)`$", re.M)


@dataclass(frozen=True)
class Bench:
    name: str
    args: tuple[str, ...]
    what: str


# In README order; the arguments are the ones the README's figures were measured with.
BENCHES = (
    Bench("desired_state", ("bench/desired_state.py",), "read + validate 10,002 deploy files from a commit"),
    Bench("reconcile", ("bench/reconcile.py",), "reconcile of 1,000 apps x 3 namespaces: no-op, 1,000 changed, waiting"),
    Bench("kubectl_compare", ("bench/kubectl_compare.py", "--profile"), "deployctl beside kubectl built from the same Kubernetes module"),
    Bench("rollout_wait", ("bench/rollout_wait.py",),
          "a rollout wait for 50 and 1,000 changed apps against the cluster's own time, from an independent watcher"),
    Bench("applock", ("bench/applock.py", "--apps", "30", "--runs", "9"), "the per-app locks' cost on a no-op (none are taken)"),
    Bench("registry", ("bench/registry.py",), "resolve 1,000 distinct tags in the local registry"),
    Bench("audit", ("bench/audit.py",), "audit appends (with and without the chain), history queries, audit verify"),
    Bench("verify_cost", ("bench/verify_cost.py", "--apps", "1000", "--count", "5", "--workers", "8"),
          "verification of 1,000 deploys against a real Prometheus: controller CPU, memory, queries"),
    Bench("attempt_events", ("bench/attempt_events.py",), "one attempt with its rollout events; events written per wave"),
    Bench("latency", ("bench/latency.py",), "push to patch latency and controller memory"),
    Bench("controller_timing", ("bench/controller_timing.py", "--repeat", "2"),
          "drift put back by watch, standby takeover after SIGKILL, exit after SIGTERM"),
    Bench("shard", ("bench/shard.py", "--apps", "20", "--envs", "2", "--replicas", "1,3", "--lease", "6", "--retry", "1",
                    "--churn", "65"),
          "sharded watch: keys moved 3 -> 4; unsharded vs sharded single replica; no-op round and push -> applied "
          "for 1 and 3 replicas; failover, handover; a churn phase (SIGKILL every 30 s), overlap, longest unowned"),
    Bench("shard_10k", ("bench/shard.py", "--apps", "2500", "--envs", "4", "--replicas", "1,2,4", "--churn", "0",
                        "--timeout", "30m", "--ceiling", "2400"),
          "sharded watch at 10,000 app-environments (2,500 apps x 4 environments), lease 15 s, retry 2 s: unsharded "
          "vs sharded single replica; no-op round, push -> all applied and RSS for 1, 2 and 4 replicas; failover and "
          "handover at 4; overlap (the churn phase is measured at the smaller size above)"),
    Bench("ui", ("bench/ui.py",), "dashboard render times"),
    Bench("controlplane", ("bench/controlplane.py",), "warm local control plane start and idle memory"),
    Bench("kafka_events", ("bench/kafka_events.py",), "Kafka test broker and CDEvents drain rate"),
    Bench("maketest", ("bench/maketest.py",), "`make test` on a fresh clone, caches warm"),
    Bench("maketest_cold", ("bench/maketest.py", "--cold"), "`make test` on a fresh clone, caches cold"),
)


def machine() -> str:
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), 0)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, {mem_kib / 2**20:.1f} GiB, load average {load} at start"


def commit() -> str:
    """The commit measured (``+dirty`` when the work tree has changes to tracked files)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", ":!README.md"], cwd=ROOT,
                           check=False).returncode != 0
    return head + ("+dirty" if dirty else "")


def run(bench: Bench) -> tuple[str, bool]:
    """One benchmark's section: command, commit, date, machine (load at start and end), its output verbatim."""
    command = " ".join((".venv/bin/python", *bench.args))
    started, host, measured = datetime.now(UTC), machine(), commit()  # the commit before it runs, not after
    t0 = time.monotonic()
    printed: list[str] = []
    with subprocess.Popen([sys.executable, *bench.args], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # shown as it comes (a long benchmark shows its progress), kept for README
            printed.append(line)
            sys.stderr.write(f"  {bench.name}| {line}")
            sys.stderr.flush()
    took = time.monotonic() - t0
    end_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = "".join(printed).rstrip().replace("```", "'''")
    lines = [f"### `{bench.name}`", "", f"{bench.what}.", "",
             f"- command: `{command}`", f"- commit: {measured}", f"- date: {started:%Y-%m-%d %H:%M} UTC ({took:.0f} s)",
             f"- machine: {host}, {end_load} at the end"]
    if proc.returncode != 0:  # what it measured until then stays, said to be partial
        lines.append(f"- stopped: exit {proc.returncode} before the end (its ceiling, a signal or an error); the "
                     "figures are the ones it printed until then")
    lines += ["", "```", out, "```", ""]
    if proc.returncode != 0:
        sys.stderr.write(f"figures: {bench.name} exited {proc.returncode} (its output is above)\n")
    return "\n".join(lines), proc.returncode == 0


def sections(block: str) -> dict[str, str]:
    """The existing sections of the generated block, by benchmark name."""
    found: dict[str, str] = {}
    marks = list(SECTION.finditer(block))
    for i, m in enumerate(marks):
        stop = marks[i + 1].start() if i + 1 < len(marks) else len(block)
        found[m["name"]] = block[m.start():stop].rstrip() + "\n"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="rerun only these benchmarks")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the sections instead of rewriting README.md (make bench)")
    opts = parser.parse_args()
    if opts.list:
        for b in BENCHES:
            print(f"{b.name:16} {' '.join(b.args)}")
        return 0
    names = {b.name for b in BENCHES}
    unknown = set(opts.only or ()) - names
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    if BEGIN not in README.read_text() or END not in README.read_text():
        parser.error(f"{README} has no {BEGIN} ... {END} block")
    ok = True
    for bench in BENCHES:
        if opts.only and bench.name not in opts.only:
            continue
        print(f"figures: running {bench.name} ...", file=sys.stderr, flush=True)
        section, passed = run(bench)
        if opts.print_only:
            print(section, flush=True)
        elif passed or section.count("\n") > 12:  # a stopped run keeps what it printed (said so), if anything
            write(bench.name, section)  # after each one: an interrupted run keeps what it measured
        ok &= passed
    return 0 if ok else 1


def write(name: str, section: str) -> None:
    """Put one section into README.md as it is now (read again: it may have changed during a long benchmark),
    keeping the others in the order of BENCHES."""
    head, rest = README.read_text().split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    kept = sections(block)
    kept[name] = section
    body = "\n".join(kept[b.name] for b in BENCHES if b.name in kept)
    README.write_text(f"{head}{BEGIN}\n\n{body}\n{END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
