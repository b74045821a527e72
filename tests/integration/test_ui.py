"""The dashboard as a person sees it: `deployctl ui` and `deployctl watch` as real processes, a real deploy repo,
a real SQLite audit store and the local control plane, read in headless Debian Chromium (Playwright driving
/usr/bin/chromium; nothing is downloaded). Every page visited is saved as a screenshot under the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployctl.edges.audit.url import open_store
from deployctl.model.audit import AttemptEvent
from tests.fixtures.auditdata import T0, make_attempt
from tests.fixtures.registry import free_port
from tests.integration.test_controller import sha, wait_for

pytestmark = pytest.mark.integration

DEPLOYCTL = str(Path(sys.executable).with_name("deployctl"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IMAGE = "registry.example.com/shop"




def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def config(staging: str, production: str, *, owner: str = "@shop/payments", source: str = "") -> str:
    return (
        "version: 1\napps:\n"
        f"  api:\n    image: {IMAGE}/api\n    pin: tag\n    owner: '{owner}'\n"
        "    commit_url: https://git.example.com/shop/api/-/commit/{sha}\n"
        + (f"    source: {source}\n" if source else "") +
        f"  web:\n    image: {IMAGE}/web\n    pin: tag\n    owner: '@shop/frontend'\n"
        "environments:\n"
        f"  staging:\n    namespace: {staging}\n"
        f"  production:\n    namespace: {production}\n    requires: [staging]\n"
    )


def deploy_files(env: str, shas: dict[str, str]) -> dict[str, str]:
    return {f"environments/{env}/{app}.deploy": f"{s}\n" for app, s in shas.items()}


class Server:
    """One `deployctl ui` or `deployctl watch` process on 127.0.0.1."""

    def __init__(self, log: Path, args: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([DEPLOYCTL, "--log-level", "info", *args], stdout=out,
                                         stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def url(self, path: str = "/ui/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait(self, path: str = "/ui/", status: int = 200) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log.read_text()}")
            return get(self.url(path))[0] == status
        wait_for(f"{path} to answer {status}", up, timeout=30.0)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_ui(tmp_path: Path, repo: Path | str, audit: str, *extra: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    server = Server(tmp_path / f"ui-{port}.log", ["ui", "--repo", str(repo), "--audit", audit,
                                                  "--listen", f"127.0.0.1:{port}", "--refresh", "0.5", *extra], port,
                    env=env)
    server.wait("/healthz")
    return server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("the browser tests need Debian's chromium (bash .ci/system-deps.sh installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    tab.shot = lambda name: tab.screenshot(path=str(shots / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]
    yield tab
    context.close()
    assert not errors, f"script errors on the page: {errors}"


@pytest.fixture
def shop(cluster, namespace, make_repo, tmp_path):
    """staging (namespace) and production (a second namespace), api healthy and web never ready in staging."""
    production = f"{namespace}-prod"
    cluster.create_namespace(production)
    cluster.deployment(namespace, "api", image=f"{IMAGE}/api:initial")
    cluster.deployment(namespace, "web", image=f"{IMAGE}/web:initial", never_ready=True, progress_deadline=2)
    for app in ("api", "web"):
        cluster.deployment(production, app, image=f"{IMAGE}/{app}:initial")
    source = make_repo("api-src")  # the api's own repo, on this disk: the app page lists its commits
    api = [source.commit({"main.py": str(i)}, message=m) for i, m in enumerate(
        ["Initial api", "Add a health endpoint", "Fix rounding in basket totals", "Speed up checkout"])]
    repo = make_repo()
    shas = {"api": api[1], "web": sha("web-1"), "api-next": api[3]}
    repo.commit({"deployctl.yaml": config(namespace, production, source="../api-src"),
                 **deploy_files("staging", {"api": api[1], "web": shas["web"]}),
                 **deploy_files("production", {"api": api[0], "web": sha("web-0")})},
                message="First deploy")
    yield repo, shas, production
    cluster.delete_namespace(production)


def cell(page, env: str, app: str):
    return page.locator(f'td.cell[data-env="{env}"][data-app="{app}"]')


def test_matrix_shows_the_live_sha_a_failed_rollout_and_the_promotion_verdict_after_a_reconcile(
        cluster, namespace, shop, page, tmp_path):
    repo, shas, production = shop
    audit = f"sqlite:///{tmp_path}/audit.db"
    open_store(audit).close()
    ui = start_ui(tmp_path, repo.path, audit, "--kubeconfig", cluster.kubeconfig)
    try:
        page.goto(ui.url())
        api = cell(page, "staging", "api")
        assert api.get_attribute("data-state") == "pending"
        assert api.locator(".live").inner_text().strip() == "–"
        link = api.locator(".desired a")
        assert link.inner_text() == shas["api"][:12]
        assert link.get_attribute("href") == f"https://git.example.com/shop/api/-/commit/{shas['api']}"
        page.shot("matrix-before")  # type: ignore[attr-defined]
        page.goto(ui.url("/ui/apps/api"))
        verdict = page.locator('.verdict[data-to="production"]')
        assert "blocked" in verdict.locator(".headline").inner_text()
        assert "has not run successfully in staging" in verdict.inner_text()
        page.shot("app-before")  # type: ignore[attr-defined]

        done = subprocess.run([DEPLOYCTL, "reconcile", "--repo", str(repo.path), "--env", "staging",
                               "--audit", audit, "--kubeconfig", cluster.kubeconfig, "--timeout", "60"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr  # web's rollout fails

        page.goto(ui.url())
        page.wait_for_selector('td.cell[data-env="staging"][data-app="api"][data-state="in-sync"]', timeout=15000)
        api = cell(page, "staging", "api")
        assert api.locator(".live").inner_text().strip() == shas["api"][:12]
        assert "succeeded" in api.locator(".last").inner_text()
        web = cell(page, "staging", "web")
        assert web.get_attribute("data-state") == "failed"
        assert web.locator(".badge").inner_text() == "failed"
        assert "ProgressDeadlineExceeded" in web.locator(".reason").inner_text()
        page.shot("matrix-after")  # type: ignore[attr-defined]

        page.goto(ui.url("/ui/apps/api"))
        verdict = page.locator('.verdict[data-to="production"]')
        assert "may be promoted" in verdict.locator(".headline").inner_text()
        assert f"{shas['api'][:12]} ran in staging" in verdict.inner_text()
        assert page.locator("#cmd-promote-production").input_value() == \
            "deployctl promote api --from staging --to production --commit"
        page.shot("app-after")  # type: ignore[attr-defined]
        page.goto(ui.url("/ui/apps/web"))
        assert "blocked" in page.locator('.verdict[data-to="production"] .headline').inner_text()
        attempt = page.locator(".history li.s-failed a").first
        attempt.click()
        page.wait_for_selector("pre.error")
        assert "ProgressDeadlineExceeded" in page.locator("pre.error").inner_text()
        assert "deployment/web" in page.locator("main").inner_text()
        rollout = page.locator("table.rollout")  # what happened then, recorded, not the workload's state now
        assert "applied" in rollout.inner_text() and "ProgressDeadlineExceeded" in rollout.locator(
            "tr.ev-stalled").inner_text()
        page.shot("attempt")  # type: ignore[attr-defined]

        # a second api deploy to staging: its history entry lists the api commits in between
        repo.commit(deploy_files("staging", {"api": shas["api-next"]}), message="staging: speed up checkout")
        done = subprocess.run([DEPLOYCTL, "reconcile", "--repo", str(repo.path), "--env", "staging", "--app", "api",
                               "--audit", audit, "--kubeconfig", cluster.kubeconfig, "--timeout", "60"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        page.goto(ui.url("/ui/apps/api"))
        newest = page.locator(".history > li").first
        assert f"{shas['api'][:12]} → {shas['api-next'][:12]}" in newest.inner_text()
        newest.locator("summary").click()
        commits = newest.locator(".commits li").all_inner_texts()
        assert [c.split(" ", 1)[1].split(" (")[0] for c in commits] == [
            "Speed up checkout", "Fix rounding in basket totals"]
        page.shot("app-history")  # type: ignore[attr-defined]

        # the JSON behind the matrix has the fields of `deployctl status -o json`, plus the dashboard's
        status_cli = subprocess.run([DEPLOYCTL, "status", "--repo", str(repo.path), "--kubeconfig",
                                     cluster.kubeconfig, "-o", "json"], capture_output=True, text=True, timeout=60)
        cli_rows = {(r["env"], r["app"]): r for r in json.loads(status_cli.stdout)["apps"]}
        code, body = get(ui.url("/api/v1/status"))
        assert code == 200
        api_rows = {(r["env"], r["app"]): r for r in json.loads(body)["apps"]}
        assert api_rows.keys() == cli_rows.keys()
        for key, row in cli_rows.items():
            assert {k: api_rows[key][k] for k in row} == row
        assert api_rows[("staging", "web")]["state"] == "failed"
        code, body = get(ui.url("/api/v1/apps/web/history"))
        history_cli = subprocess.run([DEPLOYCTL, "history", "--audit", audit, "--app", "web", "-o", "json"],
                                     capture_output=True, text=True, timeout=60)
        assert json.loads(body) == json.loads(history_cli.stdout)
    finally:
        ui.stop()


def test_filters_by_env_app_and_owner(cluster, namespace, shop, page, tmp_path):
    repo, shas, _ = shop
    audit = f"sqlite:///{tmp_path}/audit.db"
    open_store(audit).close()
    ui = start_ui(tmp_path, repo.path, audit, "--kubeconfig", cluster.kubeconfig)
    try:
        page.goto(ui.url())
        assert page.locator("td.cell").count() == 4
        page.get_by_label("Owner").select_option("@shop/frontend")
        page.wait_for_url("**owner=%40shop%2Ffrontend**")
        assert {c.get_attribute("data-app") for c in page.locator("td.cell").all()} == {"web"}
        page.get_by_label("Environment").select_option("production")
        page.wait_for_url("**env=production**")
        shown = [(c.get_attribute("data-env"), c.get_attribute("data-app")) for c in page.locator("td.cell").all()]
        assert shown == [("production", "web")]
        page.shot("matrix-filtered")  # type: ignore[attr-defined]
        page.goto(ui.url("/ui/?app=api"))
        assert {c.get_attribute("data-app") for c in page.locator("td.cell").all()} == {"api"}
    finally:
        ui.stop()


def test_the_matrix_follows_a_rollout_by_watch_without_a_reload(cluster, namespace, make_repo, page, tmp_path):
    cluster.deployment(namespace, "api", image=f"{IMAGE}/api:initial", replicas=2)
    repo = make_repo()
    first, second = sha("api-live-1"), sha("api-live-2")
    yaml = f"version: 1\napps:\n  api:\n    image: {IMAGE}/api\n    pin: tag\nenvironments:\n  staging:\n    namespace: {namespace}\n"
    repo.commit({"deployctl.yaml": yaml, "environments/staging/api.deploy": f"{first}\n"})
    port = free_port()
    watch = Server(tmp_path / "watch.log", [
        "watch", "--repo", str(repo.path), "--interval", "0.5s", "--listen", f"127.0.0.1:{port}",
        "--audit", f"sqlite:///{tmp_path}/audit.db", "--kubeconfig", cluster.kubeconfig,
        "--mirror-dir", str(tmp_path / "mirror"), "--timeout", "60s", "--no-leader-election"], port)
    try:
        watch.wait("/readyz")
        page.goto(watch.url())
        page.wait_for_selector('td.cell[data-app="api"][data-state="in-sync"]', timeout=20000)
        assert cell(page, "staging", "api").locator(".live").inner_text().strip() == first[:12]
        page.evaluate("window.__sameDocument = true")
        page.evaluate("""() => { window.__states = [];
            new MutationObserver(() => { const c = document.querySelector('td.cell[data-app="api"]');
              if (c) window.__states.push(c.dataset.state + ' ' + c.querySelector('.live').textContent.trim()); })
            .observe(document.querySelector('[data-poll]'), {childList: true, subtree: true}); }""")
        repo.commit({"environments/staging/api.deploy": f"{second}\n{first}\n"}, message="Deploy api 2")
        page.wait_for_function(
            f"""() => {{ const c = document.querySelector('td.cell[data-app="api"]');
                 return c && c.dataset.state === 'in-sync' && c.querySelector('.live').textContent.trim() === '{second[:12]}'; }}""",
            timeout=30000)
        assert page.evaluate("window.__sameDocument") is True  # updated in place: no reload
        assert page.evaluate("window.__states.length") >= 1
        assert "Live: updated" in page.locator("#poll-status").inner_text()
        page.shot("matrix-live")  # type: ignore[attr-defined]
        code, body = get(watch.url("/api/v1/status"))
        assert code == 200 and json.loads(body)["apps"][0]["live_sha"] == second
    finally:
        watch.stop()


def test_escaping_auth_and_read_only(deploy_repo, page, tmp_path):
    """Hostile strings from the repo and the audit store are shown as text; a protected listener
    answers 401 without credentials; nothing but GET is served. No cluster needed."""
    hostile = "<img src=x onerror=window.__pwned=1>"
    deploy_repo.commit({"deployctl.yaml": config("shop-staging", "shop", owner=hostile)}, message="owner")
    audit = f"sqlite:///{tmp_path}/audit.db"
    store = open_store(audit)
    attempt = store.start(make_attempt(env="staging", app="api", namespace="shop-staging",
                                       app_commit_summary=f"<script>window.__pwned=2</script>{hostile}"))
    store.add_events([AttemptEvent(attempt, 1, T0, "applied", "deployment/api: generation 2, image api:2"),
                      AttemptEvent(attempt, 2, T0, "stalled", f"pods: {hostile}")])
    store.finish(attempt, result="failed", error=f"rollout failed: {hostile}")
    store.close()
    token = tmp_path / "token"
    token.write_text(uuid.uuid4().hex + "\n")
    open_ui = start_ui(tmp_path, deploy_repo.path, audit, "--no-cluster")
    try:
        page.goto(open_ui.url())
        assert hostile in page.locator("th .owner").first.inner_text()
        page.goto(open_ui.url(f"/ui/apps/api/attempts/{attempt}"))
        assert hostile in page.locator("pre.error").inner_text()
        assert f"pods: {hostile}" in page.locator("table.rollout tr.ev-stalled").inner_text()
        with urllib.request.urlopen(open_ui.url(f"/api/v1/apps/api/attempts/{attempt}"), timeout=10) as r:
            doc = json.loads(r.read())
        assert [(e["seq"], e["kind"]) for e in doc["events"]] == [(1, "applied"), (2, "stalled")]
        assert get(open_ui.url(f"/ui/apps/web/attempts/{attempt}"))[0] == 404  # an attempt of another app
        page.shot("attempt-hostile")  # type: ignore[attr-defined]
        page.goto(open_ui.url("/ui/timeline"))
        page.wait_for_selector("#timeline .main-svg", timeout=15000)  # plotly.js, served by us
        page.shot("timeline")  # type: ignore[attr-defined]
        assert page.evaluate("window.__pwned") is None
        request = urllib.request.Request(open_ui.url("/api/v1/status"), data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
    finally:
        open_ui.stop()

    # a URL is mirrored and read at the branch head
    by_url = start_ui(tmp_path, f"file://{deploy_repo.path}", audit, "--no-cluster",
                      env={"DEPLOYCTL_MIRROR_DIR": str(tmp_path / "mirror")})
    try:
        code, body = get(by_url.url("/api/v1/status"))
        assert code == 200 and json.loads(body)["deploy_commit"] == deploy_repo.head
    finally:
        by_url.stop()

    guarded = start_ui(tmp_path, deploy_repo.path, audit, "--no-cluster", "--token-file", str(token),
                       "--trusted-proxy", "10.0.0.0/8")
    try:
        for path in ("/ui/", "/api/v1/status", "/ui/apps/api", "/api/v1/apps/api/history"):
            assert get(guarded.url(path))[0] == 401
        assert get(guarded.url("/ui/"), {"X-Forwarded-User": "mallory"})[0] == 401  # 127.0.0.1 is no trusted proxy
        assert get(guarded.url("/api/v1/status"), {"Authorization": "Bearer wrong"})[0] == 401
        code, body = get(guarded.url("/api/v1/status"), {"Authorization": f"Bearer {token.read_text().strip()}"})
        assert code == 200 and json.loads(body)["apps"]
    finally:
        guarded.stop()


def test_a_non_loopback_listener_answers_401_without_credentials(deploy_repo):
    """The rule for `--listen 0.0.0.0:8090` (or any non-loopback address), served here on 127.0.0.1."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp.test_utils import TestClient, TestServer

    from deployctl.ui.auth import UiAuth, parse_networks
    from deployctl.ui.data import Dashboard, RepoView
    from deployctl.ui.server import make_app

    async def scenario() -> None:
        dashboard = Dashboard(RepoView(deploy_repo.path), store=None, clusters=None)
        app = make_app(dashboard, UiAuth.for_listener("0.0.0.0"))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            for path in ("/ui/", "/api/v1/status", "/ui/timeline", "/ui/static/style.css"):
                response = await client.get(path, headers={"X-Forwarded-User": "someone"})
                assert response.status == 401, path
                assert "non-loopback" in (await response.json())["message"]
            assert (await client.get("/healthz")).status == 200
        # an auth proxy on this host (a sidecar): its user header is believed, and shown escaped
        proxied = make_app(dashboard, UiAuth.for_listener("0.0.0.0", trusted_proxies=parse_networks(["127.0.0.1"])))
        async with TestClient(TestServer(proxied, host="127.0.0.1")) as client:
            assert (await client.get("/ui/")).status == 401
            response = await client.get("/ui/", headers={"X-Forwarded-User": "<b>dana</b>"})
            assert response.status == 200
            assert "read-only, as &lt;b&gt;dana&lt;/b&gt;" in await response.text()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may hold this thread's event loop
        pool.submit(asyncio.run, scenario()).result(timeout=60)


def test_the_dashboard_names_its_viewer_without_an_aiohttp_warning(deploy_repo, tmp_path):
    """The viewer an auth proxy names reaches the page, and aiohttp has nothing to warn about (it used to print
    NotAppKeyWarning for a string key on the request, once per process)."""
    audit = f"sqlite:///{tmp_path}/audit.db"
    open_store(audit).close()
    ui = start_ui(tmp_path, deploy_repo.path, audit, "--no-cluster", "--trusted-proxy", "127.0.0.1",
                  env={"PYTHONWARNINGS": "default"})  # show every warning once, as a test run does
    try:
        code, body = get(ui.url("/ui/"), {"X-Forwarded-User": "dana"})
        assert code == 200 and "read-only, as dana" in body
        code, body = get(ui.url("/ui/apps/nope"), {"X-Forwarded-User": "dana"})
        assert code == 404 and "read-only, as dana" in body
    finally:
        ui.stop()
    log = ui.log.read_text()
    assert "Warning" not in log, log
