"""Safe under real CI (issue 12), on the real control plane with real git repos and real audit stores:
no rollback by an older run, one writer per environment, interrupted means interrupted, clusters fail
apart, every KUBECONFIG file is read, allowlists bind a context to a namespace."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from deployctl.app.run import Callbacks, run_reconcile
from deployctl.cli import main
from deployctl.model import audit
from deployctl.model.audit_target import AuditTarget
from deployctl.reconcile.options import Locking, ReconcileOptions, Selection, Timing
from tests.integration.test_reconcile_audit import records

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"
EXE = Path(sys.executable).with_name("deployctl")


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def config(envs: dict[str, tuple[str, str | None]]) -> str:
    """One app (api); env -> (namespace, context or None)."""
    lines = ["version: 1", "apps:", "  api:", f"    image: {IMAGE}/api", "    pin: tag", "environments:"]
    for env, (ns, context) in envs.items():
        lines += [f"  {env}:", f"    namespace: {ns}"] + ([f"    context: {context}"] if context else [])
    return "\n".join(lines) + "\n"


def deploy(env: str, word: str) -> dict[str, str]:
    return {f"environments/{env}/api.deploy": f"{sha(word)}\n* api {word}\n"}


def image_of(cluster, namespace: str) -> str:
    return cluster.read_deployment(namespace, "api").spec.template.spec.containers[0].image


@pytest.fixture(params=["sqlite", "postgres"])
def audit_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("postgres_db"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``deployctl ARGS`` in this process (the separate-process runs are the lock and kill tests)."""
    result = CliRunner().invoke(main, list(args), env={"CI": ""})
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


# -- never move backwards by accident -------------------------------------------------------------


def test_an_older_ref_after_a_newer_one_is_skipped_and_force_older_is_audited(
        cluster, namespace, make_repo, audit_url):
    cluster.deployment(namespace, "api")
    repo = make_repo()
    older = repo.commit({"deployctl.yaml": config({"staging": (namespace, None)}), **deploy("staging", "one")})
    newer = repo.commit(deploy("staging", "two"))
    common = ["reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--audit", audit_url,
              "--timeout", "60"]
    assert cli(*common, "--ref", newer).returncode == 0
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('two')}"

    preview = cli("plan", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--ref", older)
    assert f"skipped: live deploy commit {newer[:7]} is newer than {older[:7]}" in preview.stdout  # plan says so
    rerun = cli(*common, "--ref", older)  # a re-run of the old CI job
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"skipped: live deploy commit {newer[:7]} is newer than {older[:7]}" in rerun.stdout
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('two')}"  # not rolled back
    skipped = records(audit_url)[0]
    assert (skipped.result, skipped.attempt.deploy_commit) == ("skipped", older)

    forced = cli(*common, "--ref", older, "--force-older")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('one')}"
    last = records(audit_url)[0]
    assert last.result == "succeeded" and last.attempt.deploy_commit == older
    assert last.error is not None and f"--force-older: applied deploy commit {older[:7]} over the newer live " \
        f"deploy commit {newer[:7]}" in last.error
    assert [r.result for r in records(audit_url)] == ["succeeded", "skipped", "succeeded"]


def test_a_commit_on_another_history_is_refused_unless_allowed_and_an_unknown_one_says_how_to_fix_it(
        cluster, namespace, make_repo):
    cluster.deployment(namespace, "api")
    repo = make_repo()
    base = repo.commit({"deployctl.yaml": config({"staging": (namespace, None)}), **deploy("staging", "one")})
    main_tip = repo.commit(deploy("staging", "two"))
    other = repo.commit(deploy("staging", "three"), branch="other", parents=[base])  # a force-push
    common = ["reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--no-audit",
              "--timeout", "60"]
    assert cli(*common, "--ref", main_tip).returncode == 0
    refused = cli(*common, "--ref", other)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"live deploy commit {main_tip[:7]} and {other[:7]} are on different histories" in refused.stdout
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('two')}"
    assert cli(*common, "--ref", other, "--allow-non-descendant").returncode == 0
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('three')}"

    clone = make_repo("shallow")  # a checkout that does not have the live deploy commit
    clone.commit({"deployctl.yaml": config({"staging": (namespace, None)}), **deploy("staging", "four")})
    unknown = cli("reconcile", "--repo", str(clone.path), "--kubeconfig", cluster.kubeconfig, "--no-audit")
    assert unknown.returncode == 2
    assert f"live deploy commit {other[:7]} is not in the local clone" in unknown.stdout
    assert "fetch-depth: 0" in unknown.stdout
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('three')}"


# -- one writer per app ---------------------------------------------------------------------------


def hold_app_lock(cluster, namespace: str, app: str, identity: str, lease: float = 3):
    """``app``'s lock, taken (and renewed) as another run would hold it."""
    from deployctl.edges.kube.cluster import Cluster
    from deployctl.edges.kube.locks import AppLock, LeaseLocks

    locks = LeaseLocks(lambda _context: Cluster(kubeconfig=cluster.kubeconfig))
    deadline = time.monotonic() + 20
    while not isinstance(lock := locks.try_take(None, namespace, app, identity=identity, lease=lease), AppLock):
        assert time.monotonic() < deadline, lock
        time.sleep(0.2)
    return lock


def test_two_concurrent_reconciles_of_one_app_apply_once_and_record_once(
        cluster, namespace, make_repo, audit_url):
    cluster.deployment(namespace, "api")
    repo = make_repo()
    repo.commit({"deployctl.yaml": config({"staging": (namespace, None)}), **deploy("staging", "one")})
    # A third run holds staging while the two CI jobs start, so that both are sure to find it busy.
    holder = hold_app_lock(cluster, namespace, "api", "ci-job-4710")
    args = [str(EXE), "reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig,
            "--audit", audit_url, "--timeout", "60", "--lock-lease", "3"]
    jobs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "CI": "true", "GITLAB_USER_LOGIN": "ci", "CI_JOB_ID": job,
                                  "CI_PROJECT_PATH": "shop/deploy", "GITHUB_RUN_ID": "", "CI_JOB_URL": ""})
            for job in ("4711", "4712")]
    errs: list[list[str]] = [[], []]
    readers = [threading.Thread(target=lambda j=j, e=e: e.extend(j.stderr), daemon=True)  # type: ignore[misc]
               for j, e in zip(jobs, errs, strict=True)]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 60
    while not all(any("waiting for staging/api: held by ci-job-4710 since " in line for line in e) for e in errs):
        assert time.monotonic() < deadline and all(j.poll() is None for j in jobs), errs
        time.sleep(0.1)
    holder.release()
    outputs = [job.communicate(timeout=120)[0] for job in jobs]
    for r in readers:
        r.join(10)
    assert [job.returncode for job in jobs] == [0, 0], (outputs, errs)
    results = sorted("succeeded" if " succeeded " in out else "in-sync" for out in outputs)
    assert results == ["in-sync", "succeeded"], outputs  # the second re-planned from what is live: a no-op
    assert [(r.attempt.app, r.result) for r in records(audit_url)] == [("api", "succeeded")]
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('one')}"


def test_ci_waits_for_the_app_a_replica_writes_and_meanwhile_writes_another_app_of_that_environment(
        cluster, namespace, make_repo, tmp_path):
    for app in ("api", "web"):
        cluster.deployment(namespace, app)
    two_apps = config({"staging": (namespace, None)}).replace(
        "environments:", f"  web:\n    image: {IMAGE}/web\n    pin: tag\nenvironments:")
    repo = make_repo()
    repo.commit({"deployctl.yaml": two_apps, **deploy("staging", "one"),
                 "environments/staging/web.deploy": f"{sha('web-one')}\n"})
    # a controller replica is writing api (it holds api's lock, under its slot's fence)
    holder = hold_app_lock(cluster, namespace, "api", "deployctl-r1@pod/1-abcdef")
    ci = subprocess.Popen([str(EXE), "reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig,
                           "--audit", f"sqlite:///{tmp_path / 'audit.db'}", "--timeout", "60", "--lock-lease", "3"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": ""})
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(ci.stderr), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60

        def web_image() -> str:
            return cluster.read_deployment(namespace, "web").spec.template.spec.containers[0].image

        while not (web_image() == f"{IMAGE}/web:{sha('web-one')}"
                   and any("waiting for staging/api: held by deployctl-r1@pod/1-abcdef since " in line for line in err)):
            assert time.monotonic() < deadline and ci.poll() is None, err
            time.sleep(0.1)
        # web is written in parallel with the replica's api; api is not written while the replica holds it
        assert image_of(cluster, namespace) == "registry.example.com/shop/app:initial"
    finally:
        holder.release()
    out, _ = ci.communicate(timeout=120)
    reader.join(10)
    assert ci.returncode == 0, (out, err)
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('one')}"


def test_a_run_with_nothing_to_change_sends_no_lease_request(cluster, namespace, make_repo, tmp_path):
    cluster.deployment(namespace, "api")
    repo = make_repo()
    repo.commit({"deployctl.yaml": config({"staging": (namespace, None)}), **deploy("staging", "one")})
    recorded = AuditTarget(f"sqlite:///{tmp_path / 'audit.db'}")  # no open attempt in it: no lock is looked at
    first = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=recorded)
    assert first.requests.get("lease POST") == 1 and first.requests.get("lease DELETE") == 1, first.requests
    again = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=recorded)
    assert [str(o.result) for o in again.outcomes] == ["in-sync"]
    assert not [verb for verb in again.requests if verb.startswith("lease")], again.requests


def test_a_run_that_cannot_get_the_lock_in_time_gives_up_naming_the_holder_and_applies_nothing(
        cluster, namespace, make_repo):
    cluster.deployment(namespace, "api")
    repo = make_repo()
    repo.commit({"deployctl.yaml": config({"staging": (namespace, None)}), **deploy("staging", "one")})
    holder = hold_app_lock(cluster, namespace, "api", "ci-job-4710")
    try:
        result = cli("reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--no-audit",
                     "--lock-timeout", "1")
    finally:
        holder.release()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "waiting for staging/api: held by ci-job-4710 since " in result.stderr
    assert f"lock lease {namespace}/deployctl-lock-api is held by ci-job-4710 since " in result.stdout
    assert "gave up after 1s (--lock-timeout)" in result.stdout
    assert image_of(cluster, namespace) == "registry.example.com/shop/app:initial"


# -- interrupted means interrupted ----------------------------------------------------------------


def test_a_run_killed_holding_the_lock_is_closed_as_interrupted_but_a_live_run_is_not(
        cluster, make_repo, audit_url, tmp_path):
    staging, production = f"t-stg-{os.getpid()}-{time.monotonic_ns() % 10**6}", f"t-prd-{time.monotonic_ns() % 10**8}"
    for ns in (staging, production):
        cluster.create_namespace(ns)
        cluster.deployment(ns, "api", never_ready=True)  # rollouts never finish: attempts stay open
    try:
        repo = make_repo()
        repo.commit({"deployctl.yaml": config({"staging": (staging, None), "production": (production, None)}),
                     **deploy("staging", "one"), **deploy("production", "one")})

        def start(env: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [str(EXE), "reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig, "--audit",
                 audit_url, "--env", env, "--timeout", "120", "--lock-lease", "2"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CI": ""})

        def open_attempt(env: str) -> bool:
            try:
                return any(r.result == "started" for r in records(audit_url, env=env))
            except audit.AuditError:
                return False

        killed, live = start("staging"), start("production")
        try:
            deadline = time.monotonic() + 60
            applied = f"{IMAGE}/api:{sha('one')}"
            while not (open_attempt("staging") and open_attempt("production")
                       and image_of(cluster, staging) == applied):  # killed while it waits for the rollout
                assert time.monotonic() < deadline, "the two runs did not record their attempts"
                time.sleep(0.2)
            killed.send_signal(signal.SIGKILL)
            killed.wait(10)
            # a new commit for staging: the take-over writes api there, so it takes api's lock
            repo.commit({"deployctl.yaml": config({"staging": (staging, None), "production": (production, None)}),
                         **deploy("staging", "two"), **deploy("production", "one")})
            waits: list[str] = []
            takeover = run_reconcile(repo=str(repo.path), kubeconfig=cluster.kubeconfig, audit=AuditTarget(audit_url),
                                     options=ReconcileOptions(selection=Selection(envs=("staging",)), timing=Timing(wait=False),
                                                              locking=Locking(lease=2)),
                                     callbacks=Callbacks(on_wait=waits.append))
            # it waited, then took the lock when the dead run's lease expired (waited out, it would fail)
            assert takeover.exit_code == 0, takeover.outcomes
            assert len(waits) == 1 and waits[0].startswith("waiting for staging/api: held by "), waits
            everything = sorted(records(audit_url), key=lambda r: r.id)
            first = {r.attempt.env: r for r in reversed(everything)}  # each environment's first attempt
            assert first["staging"].result == "interrupted"  # the take-over took api's lock: that run lost it
            assert first["production"].result == "started"  # its run still holds production's api lock
            assert first["staging"].attempt.lock_holder and first["production"].attempt.lock_holder
            assert first["staging"].attempt.lock_holder != first["production"].attempt.lock_holder
            assert [(r.attempt.env, r.attempt.new_sha, r.result) for r in everything[2:]] == [
                ("staging", sha("two"), "succeeded")], everything  # no-wait applies are recorded as succeeded
        finally:
            live.kill()
            live.wait(10)
    finally:
        cluster.delete_namespace(staging)
        cluster.delete_namespace(production)


# -- clusters fail apart, every KUBECONFIG file is read --------------------------------------------


def _renamed_kubeconfig(source: str, path: Path, name: str) -> Path:
    """A copy of ``source`` whose cluster, user and context are all called ``name``."""
    doc = yaml.safe_load(Path(source).read_text())
    doc["clusters"][0]["name"] = doc["users"][0]["name"] = doc["contexts"][0]["name"] = name
    doc["contexts"][0]["context"] = {"cluster": name, "user": name}
    doc["current-context"] = name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_one_stopped_cluster_fails_its_environment_only_and_every_kubeconfig_file_is_read(
        cluster, namespace, make_repo, tmp_path):
    from deployctl.devtools.localcluster import controlplane
    from tests.fixtures.cluster import LocalCluster

    second_dir = tmp_path / "second"
    state = controlplane.up(second_dir)
    try:
        other = LocalCluster(dir=second_dir, kubeconfig=state.kubeconfig, server=state.server)
        other.create_namespace("shop")
        other.deployment("shop", "api")
        cluster.deployment(namespace, "api")
        kubeconfig = os.pathsep.join([str(_renamed_kubeconfig(cluster.kubeconfig, tmp_path / "a.yaml", "cluster-a")),
                                      str(_renamed_kubeconfig(state.kubeconfig, tmp_path / "b.yaml", "cluster-b"))])
        repo = make_repo()
        repo.commit({"deployctl.yaml": config({"staging": (namespace, "cluster-a"), "production": ("shop", "cluster-b")}),
                     **deploy("staging", "one"), **deploy("production", "one")})
        both = CliRunner().invoke(main, ["reconcile", "--repo", str(repo.path), "--no-audit", "--timeout", "60"],
                                  env={"KUBECONFIG": kubeconfig})
        assert both.exit_code == 0, both.output
        assert image_of(other, "shop") == f"{IMAGE}/api:{sha('one')}"  # reached through the second file
        assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('one')}"
        status = CliRunner().invoke(main, ["status", "--repo", str(repo.path), "-o", "json"],
                                    env={"KUBECONFIG": kubeconfig})  # plan and status read both files too
        assert status.exit_code == 0, status.output
        assert [a["in_sync"] for a in yaml.safe_load(status.output)["apps"]] == [True, True]
    finally:
        controlplane.down(second_dir)

    repo.commit({**deploy("staging", "two"), **deploy("production", "two")})
    apart = CliRunner().invoke(main, ["reconcile", "--repo", str(repo.path), "--no-audit", "--timeout", "60"],
                               env={"KUBECONFIG": kubeconfig})
    assert apart.exit_code == 3, apart.output
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('two')}"  # staging still deployed
    assert f"environment production: unreachable: environment production (context cluster-b, server " \
        f"{state.server}) is unreachable" in apart.output
    assert "environment staging: ok (1 succeeded)" in apart.output
    assert "Traceback" not in apart.output


# -- allowlists bind context and namespace ---------------------------------------------------------


def test_allowlists_bind_a_context_to_a_namespace_and_environments_may_not_share_one(
        cluster, namespace, make_repo, tmp_path):
    cluster.deployment(namespace, "api")
    doc = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    doc["contexts"].append({"name": "prod-cluster", "context": dict(doc["contexts"][0]["context"])})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))  # current context "local"; "prod-cluster" reaches the same API
    repo = make_repo()
    repo.commit({"deployctl.yaml": config({"production": (namespace, "prod-cluster")}), **deploy("production", "one")})
    args = ["reconcile", "--repo", str(repo.path), "--kubeconfig", str(kubeconfig), "--no-audit", "--timeout", "60"]

    bare = CliRunner().invoke(main, [*args, "--allow-namespace", namespace])  # allowed in the current context only
    assert bare.exit_code == 2, bare.output
    assert f"environment production: namespace {namespace!r} in context 'prod-cluster' is not allowed" in bare.output
    assert image_of(cluster, namespace) == "registry.example.com/shop/app:initial"
    wrong = CliRunner().invoke(main, args, env={"DEPLOYCTL_ALLOW_NAMESPACES": f"local/{namespace} prod-cluster/x"})
    assert wrong.exit_code == 2 and image_of(cluster, namespace) == "registry.example.com/shop/app:initial"
    bound = CliRunner().invoke(main, [*args, "--allow-namespace", f"prod-cluster/{namespace}"])
    assert bound.exit_code == 0, bound.output
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('one')}"

    # "local" named explicitly, and the current context (also "local"): one context + namespace, refused
    repo.commit({"deployctl.yaml": config({"staging": (namespace, "local"), "production": (namespace, None)}),
                 **deploy("staging", "two"), **deploy("production", "two")})
    shared = CliRunner().invoke(main, ["reconcile", "--repo", str(repo.path), "--kubeconfig", str(kubeconfig),
                                       "--no-audit"])
    assert shared.exit_code == 2, shared.output
    assert "environments production and staging share namespace" in shared.output
    assert image_of(cluster, namespace) == f"{IMAGE}/api:{sha('one')}"
