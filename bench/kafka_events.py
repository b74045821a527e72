"""Kafka sink benchmark: the test broker's start and memory, and deploy events drained onto a topic.

    .venv/bin/python bench/kafka_events.py [--events 500]

Starts the KRaft single-node broker of tests/fixtures/kafka.py (jars from `make kafka`), prints
the seconds until it answers metadata and its resident memory, then finishes ``--events``
attempts in a SQLite audit store and drains them to a ``type: kafka`` sink (CDEvents, structured;
one acknowledged publish per event, as the outbox requires), printing events/s. Not a timed test.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployctl.edges.audit.url import open_store  # noqa: E402
from deployctl.edges.notify import drain  # noqa: E402
from deployctl.edges.sinks import parse_settings  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from tests.fixtures.auditdata import make_attempt  # noqa: E402
from tests.fixtures.kafka import KafkaBroker, kafka_lib  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args()
    configure_logging("error")
    java = shutil.which("java")
    if java is None or not (kafka_lib().parent / "COMPLETE").exists():
        raise SystemExit("run `make kafka` first (and install java)")
    broker = KafkaBroker(kafka_lib(), java)
    started = time.monotonic()
    try:
        bootstrap = broker.start()
        print(f"broker ready in {time.monotonic() - started:.1f} s (StorageTool format included)")
        assert broker.process is not None
        print(f"broker RSS: {rss_mib(broker.process.pid):.0f} MiB")
        with tempfile.TemporaryDirectory() as tmp:
            settings = parse_settings(
                {"notify": [{"type": "kafka", "bootstrap_servers": bootstrap, "topic": "bench"}]}, source="bench"
            )
            store = open_store(f"sqlite:///{tmp}/audit.db")
            try:
                drain(store, settings, max_wait_seconds=0)
                for i in range(args.events):
                    store.finish(store.start(make_attempt(app=f"app{i % 20}")), result="succeeded")
                began = time.monotonic()
                report = drain(store, settings, max_wait_seconds=0)
                took = time.monotonic() - began
            finally:
                store.close()
        print(f"drained {report.delivered} events in {took:.2f} s: {report.delivered / took:.0f} events/s")
        print(f"broker RSS after: {rss_mib(broker.process.pid):.0f} MiB")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
