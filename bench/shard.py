"""Sharded `deployctl watch` (--shards) on the real local control plane and a real PostgreSQL.

    .venv/bin/python bench/shard.py [--apps 50] [--envs 2] [--replicas 1,2,4] [--slots 32] [--ceiling 1800]

Prints:
- the keys moved from 3 to 4 replicas, computed by the claim rule itself over the same keys and over 10,000;
- with --replicas including 1: the time from a push to every app-environment running a commit that changes
  all of them, by ONE replica unsharded (the leader mode), against which the sharded single replica's time
  gives the cost of sharding (goal: <= 10% of single-replica throughput);
- for each replica count (started on the head the cluster already runs): a no-op round (a push of the same
  head to one replica, until every replica finished one more reconcile), the time from a push to every
  app-environment running a commit that changes all of them, and the RSS of each replica;
- with the largest count: failover (SIGKILL one replica, push, time until every app is at the push),
  graceful handover (SIGTERM one, time until the others hold every slot), then a churn phase (a push every
  few seconds while a replica is SIGKILLed and a new one started every 30 s);
- for each count: the overlap check over the audit rows (no two attempts of one app by different tokens
  overlapping in time), and the longest an app-environment went unowned by a live replica (the largest
  deployctl_shard_apps_unowned_seconds any replica reported; goal <= one lease duration).

Each figure line ends with the load average it was measured under (2 shared cores: 4 replicas cannot be
faster than 1 here; the per-replica figures are what a larger machine scales). SIGTERM or Ctrl-C tears the
control plane, PostgreSQL and the replicas down; the work directory (replica logs) is kept and printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shard_parts import ROOT, Ceiling, Replica, Repo, Sampler, images, overlap_check, settled

sys.path.insert(0, str(ROOT))

from bench.teardown import on_signal_unwind  # noqa: E402
from deployctl.devtools.localcluster import controlplane  # noqa: E402
from deployctl.edges.kube.locks import LOCK_LABEL  # noqa: E402
from deployctl.rules.shards import keys_moved, settle  # noqa: E402
from tests.fixtures.postgres import PostgresServer, _bindir  # noqa: E402


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def say(text: str) -> None:
    print(f"{text}  [{load()}]", flush=True)


class Bench:
    """The cluster, the deploy repo and the PostgreSQL server one run of the bench shares across its phases."""

    def __init__(self, args: argparse.Namespace, work: Path, kubeconfig: str, base_url: str) -> None:
        from kubernetes import client, config

        self.args, self.work, self.kubeconfig, self.base_url = args, work, kubeconfig, base_url
        self.ceiling = Ceiling(args.ceiling)
        api = config.new_client_from_config(config_file=kubeconfig)
        self.core, self.apps_api = client.CoreV1Api(api), client.AppsV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.envs = {f"env-{e}": f"shard-env-{e}" for e in range(args.envs)}
        self.running: list[Replica] = []
        self.started = 0
        self.word = 0
        self.step = max(0.1, args.apps * args.envs / 1000)  # listing 10,000 Deployments loads 2 cores
        self.repo = Repo(work / "deploy.git", args.apps, self.envs)

    def create_workloads(self) -> float:
        started = time.monotonic()

        wanted = self.repo.wanted()

        def create(ns: str, i: int) -> None:  # running the first commit's image: what the first run would write
            name = f"app-{i:04d}"
            self.apps_api.create_namespaced_deployment(ns, {
                "metadata": {"name": name, "labels": {"deployctl.dev/app": name}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": name, "image": wanted[(ns, name)]}]}}}},
                _preload_content=False)

        for ns in self.envs.values():
            self.core.create_namespace({"metadata": {"name": ns}})
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i, ns=ns: create(ns, i), range(self.args.apps)))
        # deployctl is not to compete with the cluster's own backlog of creations
        self.ceiling.wait("the cluster to roll the new Deployments out",
                          lambda: settled(self.apps_api, self.envs.values()) == 0, step=self.step)
        return time.monotonic() - started

    def database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.base_url.rsplit("/", 1)[0] + "/" + name

    def start(self, prefix: str, *, url: str, leases: str, slots: int) -> Replica:
        self.started += 1
        r = Replica(self.work, f"{prefix}-r{self.started}", repo=self.repo.path, kubeconfig=self.kubeconfig,
                    audit=url, namespace=leases, slots=slots, lease=self.args.lease, retry=self.args.retry,
                    interval=self.args.interval, log_level=self.args.log_level, timeout=self.args.timeout)
        self.running.append(r)
        return r

    def stop_all(self) -> None:
        for r in self.running:
            r.stop()
        self.running = []

    def end_phase(self) -> None:
        """Between two phases: the replicas settle and stop on SIGTERM, and no app lock is left, so that the
        next phase does not time a wait for a dead holder's Lease (a new process takes a Lease it finds only
        after watching it unchanged for a lease duration). A lock a killed replica left is deleted, and said."""
        self.quiet()
        for r in self.running:
            r.terminate()
        self.running = []
        left = self.lock_leases()
        for ns, name in left:
            self.coordination.delete_namespaced_lease(name, ns)
        if left:
            say(f"  {len(left)} app lock(s) left by the stopped replicas, deleted before the next phase")

    def lock_leases(self) -> list[tuple[str, str]]:
        return [(ns, lease.metadata.name) for ns in self.envs.values()
                for lease in self.coordination.list_namespaced_lease(ns, label_selector=LOCK_LABEL).items]

    def change(self, apps: list[int] | None = None) -> str:
        self.word += 1
        return self.repo.commit(f"-{self.word}", apps)

    def applied(self) -> bool:
        return images(self.apps_api, self.envs.values()) == self.repo.wanted()

    def wait_applied(self, what: str) -> float:
        return self.ceiling.wait(what, self.applied, step=self.step)

    def push(self, head: str) -> None:
        """A webhook to the first replica that answers."""
        for r in self.running:
            try:
                r.push(head)
                return
            except OSError:
                continue
        raise SystemExit("no replica took the webhook")

    def held(self) -> float:
        return sum(r.metric("deployctl_shard_slots_held") for r in self.running)

    def runs(self) -> list[float]:
        return [r.metric("deployctl_reconciles_total") for r in self.running]

    def quiet(self) -> None:
        """Until every replica finished a run, none is in a run (runs started = runs ended: a run still
        waiting for rollouts after the images are applied counts), and none finished another for 2 s."""
        last: list[list[float]] = [[]]

        def settled() -> bool:
            now = self.runs()
            idle = all(r.metric("deployctl_reconcile_queue_seconds_count") <= n for r, n in zip(self.running, now,
                                                                                                  strict=True))
            same = now == last[0] and all(now) and idle
            last[0] = now
            return same

        self.ceiling.wait("the replicas to settle", settled, step=2.0)

    def noop(self) -> float:
        """A push of the head every replica already ran, until each finished one more run."""
        self.quiet()
        before = self.runs()
        self.push(self.repo.head())
        return self.ceiling.wait("a no-op round", lambda: all(a > b for a, b in zip(self.runs(), before, strict=True)),
                                 step=0.05)


def unsharded(bench: Bench) -> float:
    """Push -> all applied for a commit changing every app, by one replica in the leader mode."""
    url = bench.database("bench_leader")
    bench.core.create_namespace({"metadata": {"name": "leader-lease"}})
    bench.start("leader", url=url, leases="leader-lease", slots=0)
    bench.wait_applied("the first commit (leader)")
    bench.quiet()
    bench.push(bench.change())
    seconds = bench.wait_applied("the pushed commit (leader)")
    rss = bench.running[0].rss_mb()
    bench.end_phase()
    say(f"1 replica unsharded (leader mode), {bench.args.apps * bench.args.envs} app-environments: push -> all "
        f"applied {seconds:.1f}s; RSS MB {rss:.0f}")
    return seconds


def failover(bench: Bench, n: int) -> None:
    args = bench.args
    victim = bench.running.pop(-1)
    victim.proc.kill()
    victim.proc.wait(10)
    killed_at = time.monotonic()
    bench.push(bench.change())
    taken: list[float] = []

    def failed_over() -> bool:
        if not taken and bench.held() == args.slots:
            taken.append(time.monotonic() - killed_at)
        return bool(taken) and bench.applied()

    seconds = bench.ceiling.wait("failover", failed_over, step=bench.step)
    say(f"failover after SIGKILL of 1 of {n}: the others hold every slot after {taken[0]:.1f}s (goal <= lease "
        f"{args.lease:.0f}s + 2 retry periods {2 * args.retry:.0f}s); push -> all applied {seconds:.1f}s "
        "(the runs in flight, then a run of the slots taken)")
    if len(bench.running) > 1:
        leaving = bench.running.pop(-1)
        leaving.proc.send_signal(signal.SIGTERM)
        seconds = bench.ceiling.wait("handover", lambda: bench.held() == args.slots, step=0.05)
        leaving.proc.wait(30)
        say(f"graceful handover on SIGTERM: the others hold every slot after {seconds:.2f}s (goal <= 3s)")


def churn(bench: Bench, n: int, url: str, leases: str) -> None:
    """Pushes of a tenth of the apps every few seconds for --churn seconds while a replica is SIGKILLed and a
    new one started every --kill-every seconds; then until every app runs the last push."""
    args = bench.args
    while len(bench.running) < n:
        bench.start(f"n{n}", url=url, leases=leases, slots=args.slots)
    started = time.monotonic()
    next_kill = started + args.kill_every
    pushes = kills = 0
    part = max(1, args.apps // 10)
    while time.monotonic() - started < args.churn:
        if time.monotonic() >= next_kill:
            victim = bench.running.pop(kills % len(bench.running))
            victim.proc.kill()
            victim.proc.wait(10)
            bench.start(f"n{n}", url=url, leases=leases, slots=args.slots)
            kills += 1
            next_kill += args.kill_every
        first = (pushes * part) % args.apps
        bench.push(bench.change([(first + i) % args.apps for i in range(part)]))
        pushes += 1
        time.sleep(args.push_every)
    seconds = bench.wait_applied("the last push of the churn")
    say(f"churn with {n} replicas: {pushes} pushes of {part} apps each over {args.churn:.0f}s, {kills} SIGKILLs "
        f"(one every {args.kill_every:.0f}s, a new replica started each time); all applied {seconds:.1f}s after")


def replicas(bench: Bench, n: int, *, largest: bool, leader_seconds: float | None) -> None:
    args = bench.args
    url = bench.database(f"bench_{n}")
    leases = f"shard-leases-{n}"
    bench.core.create_namespace({"metadata": {"name": leases}})
    keys = args.apps * args.envs
    sampler = Sampler(lambda: bench.running, ["deployctl_shard_apps_unowned_seconds"])
    try:
        for _ in range(n):
            bench.start(f"n{n}", url=url, leases=leases, slots=args.slots)
        bench.ceiling.wait("every slot held", lambda: bench.held() == args.slots)
        seconds = bench.wait_applied("the head the cluster runs (or the first commit)")
        if not args.no_noop:
            say(f"{n} replica(s), {keys} app-environments: no-op round (push of the same head -> every replica "
                f"finished a run) {bench.noop():.2f}s")
        bench.quiet()
        bench.push(bench.change())
        seconds = bench.wait_applied("the pushed commit")
        rss = ", ".join(f"{r.rss_mb():.0f}" for r in bench.running)
        say(f"{n} replica(s), {keys} app-environments: push -> all applied {seconds:.1f}s "
            f"({keys / seconds:.0f} app-environments/s); RSS MB {rss}")
        if n == 1 and leader_seconds is not None:
            say(f"  sharding cost: sharded 1 replica {seconds:.1f}s vs unsharded {leader_seconds:.1f}s: throughput "
                f"{leader_seconds / seconds:.2f}x of unsharded (goal >= 0.90)")
        if largest and n > 1 and not args.no_failover:
            failover(bench, n)
        if largest and n > 1 and args.churn > 0:
            churn(bench, n, url, leases)
        bench.end_phase()
    finally:  # the check runs also after a phase timed out: what was written until then is checked
        unowned = sampler.stop()["deployctl_shard_apps_unowned_seconds"]
        bench.stop_all()
        audit_line(url, unowned, args.lease)


def audit_line(url: str, unowned: float, lease: float) -> None:
    attempts, twice, overlaps, results = overlap_check(url)
    by_result = ", ".join(f"{n} {result}" for result, n in sorted(results.items()))
    say(f"  audit: {attempts} attempts ({by_result}), {twice} (env, app, SHA) attempted twice, {overlaps} overlapping attempts "
        f"of one app by two tokens (goal 0); longest an app-environment went unowned {unowned:.1f}s "
        f"(goal <= lease {lease:.0f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--envs", type=int, default=2)
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--retry", type=float, default=2.0)
    parser.add_argument("--interval", default="30s", help="the replicas' --interval: a run that failed (e.g. an API "
                        "timeout under load) is tried again by the next one")
    parser.add_argument("--timeout", default="10m", help="the replicas' --timeout: a run's total deadline, its "
                        "rollouts included (those still in flight then are recorded as failed)")
    parser.add_argument("--ceiling", type=float, default=1800.0, help="total seconds; a wait past it ends the bench")
    parser.add_argument("--no-unsharded", action="store_true", help="skip the unsharded single replica")
    parser.add_argument("--no-noop", action="store_true", help="skip the no-op rounds")
    parser.add_argument("--no-failover", action="store_true", help="skip failover and handover")
    parser.add_argument("--churn", type=float, default=90.0, help="seconds of the churn phase (0: none)")
    parser.add_argument("--kill-every", type=float, default=30.0, help="a SIGKILL every so many seconds of churn")
    parser.add_argument("--push-every", type=float, default=5.0, help="a push every so many seconds of churn")
    parser.add_argument("--log-level", default="warning", help="the replicas' log level (their logs stay in the "
                        "work directory)")
    args = parser.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]
    on_signal_unwind()

    keys = [(f"env-{e}", f"app-{i:04d}") for e in range(args.envs) for i in range(args.apps)]
    big = [(f"env-{e}", f"app-{i:04d}") for e in range(4) for i in range(2500)]
    three = settle(args.slots, ["r1", "r2", "r3"])
    four = settle(args.slots, ["r1", "r2", "r3", "r4"], three)
    print(f"keys moved 3 -> 4 replicas ({args.slots} slots): {keys_moved(keys, args.slots, three, four):.3f} of "
          f"{len(keys)} keys, {keys_moved(big, args.slots, three, four):.3f} of {len(big)} (goal <= {1.3 / 4:.3f})",
          flush=True)

    bindir = _bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found")
    work = Path(tempfile.mkdtemp(prefix="deployctl-bench-shard-"))
    print(f"work directory (replica logs): {work}", flush=True)
    pg = PostgresServer(bindir)
    bench: Bench | None = None
    try:
        base = pg.start()
        state = controlplane.up(work / "cluster")
        bench = Bench(args, work, state.kubeconfig, base)
        bench.change()  # the first commit, which the Deployments are created running
        say(f"{len(keys)} Deployments created and rolled out by the cluster in {bench.create_workloads():.1f}s")
        leader_seconds = unsharded(bench) if 1 in counts and not args.no_unsharded else None
        for n in counts:
            replicas(bench, n, largest=n == max(counts), leader_seconds=leader_seconds)
    finally:
        if bench is not None:
            bench.stop_all()
        controlplane.down(work / "cluster")
        pg.stop()


if __name__ == "__main__":
    main()
