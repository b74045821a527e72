"""Verification of deploys against their metrics: a real control plane, a real Prometheus scraping a
metrics page served here, real git and SQLite. A deploy under its threshold is verified; an error-rate
jump fails verification with the value on record, a notification, a roll-forward commit and a refusal in
production; an unreachable Prometheus fails closed and leaves the rollout's record alone."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployctl.cli import main
from deployctl.edges.audit.url import open_store
from deployctl.edges.metrics.prometheus import Prometheus
from deployctl.edges.notify import drain
from deployctl.edges.sinks import NotifySettings, Sink
from tests.fixtures.httpserver import QuietHandler, serving
from tests.fixtures.registry import free_port

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/shop"


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


class Page:
    """The metrics page Prometheus scrapes: ``deploy_error_ratio`` per app and env, set by the test."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()

    def text(self) -> bytes:
        with self.lock:
            lines = ["# TYPE deploy_error_ratio gauge"] + [
                f'deploy_error_ratio{{app="{a}",env="{e}"}} {v}' for (a, e), v in sorted(self.values.items())
            ]
        return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def metrics_page() -> Iterator[tuple[Page, str]]:
    page = Page()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            body = page.text()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as address:
        yield page, address


@pytest.fixture
def chat() -> Iterator[tuple[list[dict[str, object]], str]]:
    received: list[dict[str, object]] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

    with serving(Handler) as address:
        yield received, f"http://{address}/slack"


@pytest.fixture
def prometheus_at(prometheus_with: Callable[..., str], metrics_page: tuple[Page, str]) -> Callable[[float], str]:
    """Start a Prometheus scraping the metrics page with web's error ratio in staging at ``value``; its URL
    once it shows that value."""
    page, target = metrics_page

    def start(value: float) -> str:
        page.values[("web", "staging")] = value
        url = prometheus_with("", scrape=target)
        wait_for_value(url, "web", "staging", value)
        return url

    return start


@pytest.fixture
def audit(tmp_path: Path) -> str:
    """An audit store's URL (created on first use)."""
    return f"sqlite:///{tmp_path / 'audit.db'}"


def wait_for_value(url: str, app: str, env: str, value: float) -> None:
    """Until Prometheus has scraped ``value`` for app/env (the scrape interval is 1 s)."""
    prometheus = Prometheus(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        samples = prometheus.instant(f'deploy_error_ratio{{app="{app}",env="{env}"}}')
        if samples and samples[0].value == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"Prometheus never showed {value} for {app}/{env}")


def config(staging: str, production: str) -> str:
    return (
        "version: 1\napps:\n"
        f"  web:\n    image: {IMAGE}/web\n    pin: tag\n"
        "    verify:\n"
        "      - name: error-rate\n"
        "        query: 'deploy_error_ratio{app=\"{app}\",env=\"{env}\"}'\n"
        "        success: result < 0.01\n"
        "        interval: 1s\n        count: 2\n"
        "environments:\n"
        f"  staging:\n    namespace: {staging}\n    on_verification_failure: roll-forward\n"
        f"  production:\n    namespace: {production}\n    requires: [staging]\n    require_verified: true\n"
    )


def reconcile(repo: Path, kubeconfig: str, audit: str, prometheus: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["reconcile", "--repo", str(repo), "--kubeconfig", kubeconfig, "--audit", audit, "--timeout", "60",
               "--verify", *extra],
        env={"DEPLOYCTL_PROMETHEUS_URL": prometheus, "CI": ""},
    )
    return result.exit_code, result.output


def test_a_deploy_is_verified_or_fails_verification_and_production_takes_only_a_verified_sha(
    cluster, namespace, production_ns, make_repo, audit: str, prometheus_at: Callable[[float], str],
    metrics_page: tuple[Page, str], chat: tuple[list[dict[str, object]], str],
) -> None:
    page, _ = metrics_page
    received, chat_url = chat
    cluster.deployment(namespace, "web")
    cluster.deployment(production_ns, "web")
    page.values[("web", "production")] = 0.001
    url = prometheus_at(0.002)
    store = open_store(audit)
    notify = NotifySettings((Sink(type="slack", name="chat", url=chat_url),))
    drain(store, notify, max_wait_seconds=0)  # the chat gets events from now on

    repo = make_repo()
    good, bad = sha("good"), sha("bad")
    repo.commit({"deployctl.yaml": config(namespace, production_ns),
                 "environments/staging/web.deploy": f"{good}\n"}, message="web good to staging")
    code, out = reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "staging")
    assert code == 0, out
    assert "verified" in out
    (verified,) = store.verifications(env="staging", app="web")
    assert verified.result == "verified" and verified.sha == good
    assert [m.value for m in verified.checks[0].measurements] == [0.002, 0.002]

    # the error rate jumps with the next deploy
    page.values[("web", "staging")] = 0.3
    wait_for_value(url, "web", "staging", 0.3)
    repo.commit({"environments/staging/web.deploy": f"{bad}\n{good}\n"}, message="web bad to staging")
    code, out = reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "staging")
    assert code == 1, out
    failed = store.verifications(env="staging", app="web", sha=bad)[0]
    assert failed.result == "verification-failed"
    assert failed.checks[0].measurements[0].value == 0.3
    assert "deploy_error_ratio{app=\"web\",env=\"staging\"} = 0.3, wanted result < 0.01" in failed.reason
    rollout = store.query(env="staging", app="web", sha=bad)[0]
    assert rollout.result == "succeeded" and rollout.id == failed.attempt_id  # its own record, tied to it

    # history and status show it beside the rollout
    shown = CliRunner().invoke(main, ["history", "--audit", audit, "--env", "staging"])
    assert shown.exit_code == 0 and "succeeded, verification-failed" in shown.output
    assert "succeeded, verified" in shown.output and "= 0.3, wanted result < 0.01" in shown.output
    live = CliRunner().invoke(main, ["status", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig,
                                     "--env", "staging", "--audit", audit, "-o", "json"])
    assert live.exit_code == 0, live.output
    (row,) = json.loads(live.output)["apps"]
    assert (row["live_sha"], row["verification"]) == (bad, "verification-failed")

    # roll-forward: a local commit deploying the last verified SHA, for review; nothing applied by itself
    head = repo.repo.head.peel()
    assert head.message.startswith(f"Roll back web in staging to {good[:12]}")
    assert (repo.path / "environments/staging/web.deploy").read_text().split()[0] == good

    # the chat hears of the failure: the query, the value and the threshold
    drain(store, notify, max_wait_seconds=10, base_delay=0.05)
    texts = [str(b["text"]) for b in received]
    alarm = [t for t in texts if "verification-failed" in t]
    assert len(alarm) == 1 and "deploy_error_ratio" in alarm[0] and "= 0.3" in alarm[0]
    assert "result &lt; 0.01" in alarm[0]

    # production refuses the SHA that failed verification in staging, and takes the one that passed
    repo.commit({"environments/production/web.deploy": f"{bad}\n"}, message="web bad to production")
    code, out = reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "production")
    assert code == 2, out
    assert f"{bad[:12]} failed verification in staging" in out
    assert store.query(env="production", app="web")[0].result == "refused"
    validated = CliRunner().invoke(main, ["validate", "--repo", str(repo.path), "--audit", audit])
    assert validated.exit_code == 1 and "failed verification in staging" in validated.output
    repo.commit({"environments/production/web.deploy": f"{good}\n"}, message="web good to production")
    code, out = reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "production")
    assert code == 0, out
    assert store.query(env="production", app="web")[0].result == "succeeded"
    assert store.verifications(env="production", app="web")[0].result == "verified"
    store.close()


def test_an_unreachable_prometheus_fails_verification_closed_and_leaves_the_rollout_record_alone(
    cluster, namespace, make_repo, audit: str
) -> None:
    cluster.deployment(namespace, "web")
    repo = make_repo()
    repo.commit({"deployctl.yaml": config(namespace, f"{namespace}-prod"),
                 "environments/staging/web.deploy": f"{sha('one')}\n"})
    nobody = f"http://127.0.0.1:{free_port()}"
    code, out = reconcile(repo.path, cluster.kubeconfig, audit, nobody, "--env", "staging")
    assert code == 1, out
    store = open_store(audit)
    try:
        (verification,) = store.verifications(env="staging", app="web")
        assert verification.result == "verification-failed"
        assert verification.reason.startswith("error-rate: Prometheus unreachable: cannot reach")
        (rollout,) = store.query(env="staging", app="web")
        assert rollout.result == "succeeded" and rollout.error is None
    finally:
        store.close()


def test_the_controller_verifies_in_the_background_while_it_goes_on_deploying(
    cluster, namespace, make_repo, tmp_path: Path, audit: str, prometheus_at: Callable[[float], str],
) -> None:
    from deployctl.app.verify import BackgroundVerifier
    from deployctl.controller.loop import Controller, ControllerSettings, controller_runs
    from deployctl.edges.git.mirror import Mirror
    from deployctl.reconcile.observe import ClusterPool

    url = prometheus_at(0.001)
    for app in ("web", "api"):
        cluster.deployment(namespace, app)
    repo = make_repo("deploy.git", bare=True)
    slow = config(namespace, f"{namespace}-prod").replace("interval: 1s\n        count: 2", "interval: 5s\n        count: 5")
    slow = slow.replace("environments:\n", f"  api:\n    image: {IMAGE}/api\n    pin: tag\nenvironments:\n", 1)
    repo.commit({"deployctl.yaml": slow, "environments/staging/web.deploy": f"{sha('w1')}\n",
                 "environments/staging/api.deploy": f"{sha('a1')}\n"})
    store = open_store(audit)
    pool = ClusterPool(kubeconfig=cluster.kubeconfig)
    mirror = Mirror(str(repo.path), tmp_path / "mirror", branch="main")
    controller = Controller(mirror, pool, settings=ControllerSettings(runs=controller_runs(timeout=60, poll_interval=0.2)),
                            store=store)
    verifier = BackgroundVerifier(Prometheus(url), store, pool, repo_path=str(mirror.path))
    controller.on_reconciled = verifier.submit
    try:
        first = controller.sync_once("watch")
        assert first is not None and first.exit_code == 0
        # web's 20 s window runs in the background: the next commit (api) is deployed meanwhile
        repo.commit({"environments/staging/api.deploy": f"{sha('a2')}\n"})
        second = controller.sync_once("watch")
        assert second is not None and [(o.app, o.result) for o in second.outcomes if o.new_sha == sha("a2")] == [
            ("api", "succeeded")]
        assert store.verifications(env="staging", app="web") == []  # still measuring
        assert verifier.wait(120)
        (verified,) = store.verifications(env="staging", app="web")
        assert verified.result == "verified" and verified.trigger == "watch"
        assert len(verified.checks[0].measurements) == 5
    finally:
        verifier.close()
        store.close()


def test_freeze_on_failure_suspends_the_app_until_a_person_resumes_it(
    cluster, namespace, make_repo, audit: str, prometheus_at: Callable[[float], str],
) -> None:
    url = prometheus_at(0.5)
    cluster.deployment(namespace, "web")
    repo = make_repo()
    frozen = config(namespace, f"{namespace}-prod").replace("on_verification_failure: roll-forward",
                                                            "on_verification_failure: freeze")
    repo.commit({"deployctl.yaml": frozen, "environments/staging/web.deploy": f"{sha('one')}\n"})
    code, out = reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "staging")
    assert code == 1 and "froze web in staging until a person runs deployctl resume" in out, out
    annotations = cluster.read_deployment(namespace, "web").metadata.annotations
    assert annotations["deployctl.dev/suspended"] == "true"
    assert "verification of" in annotations["deployctl.dev/suspended-reason"]
    repo.commit({"environments/staging/web.deploy": f"{sha('two')}\n{sha('one')}\n"})
    code, out = reconcile(repo.path, cluster.kubeconfig, audit, url, "--env", "staging")
    assert "suspended" in out and cluster.read_deployment(namespace, "web").metadata.annotations[
        "deployctl.dev/commit"] == sha("one")  # nothing more deployed until a person acts
