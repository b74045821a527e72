"""Run the pinned Gitea headless on a loopback port: app.ini, migrate, an admin user, API tokens.

For the tests (``tests/fixtures/gitea.py``) and for trying forge approvals by hand. SQLite, no mailer,
no SSH server, no indexers worth the name; the process writes everything under one directory.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from deployctl.devtools import processes
from deployctl.devtools.gitea.build import GiteaBuild
from deployctl.edges.http import HttpClient, HttpError
from deployctl.errors import LocalClusterError

log = structlog.get_logger(__name__)

ADMIN = "forge-admin"
PASSWORD = "deployctl-Test-pw-1"  # every user the helpers create has it: a throwaway local server

_APP_INI = """\
APP_NAME = deployctl test forge
RUN_USER = {user}
RUN_MODE = prod
WORK_PATH = {work}
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:{port}/
STATIC_ROOT_PATH = {static}
APP_DATA_PATH = {work}/data
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = {work}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = {work}/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = {secret}
INTERNAL_TOKEN = {internal}
PASSWORD_HASH_ALGO = pbkdf2_hi
MIN_PASSWORD_LENGTH = 6
PASSWORD_COMPLEXITY = off

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_KEEP_EMAIL_PRIVATE = false

[mailer]
ENABLED = false

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[queue]
TYPE = channel

[cron]
ENABLED = false

[cron.update_checker]
ENABLED = false

[oauth2]
ENABLED = false

[actions]
ENABLED = false

[log]
MODE = file
LEVEL = Warn
ROOT_PATH = {work}/log

[api]
MAX_RESPONSE_ITEMS = 50
DEFAULT_PAGING_NUM = 30
"""


@dataclass
class GiteaServer:
    """One running Gitea: its base URL, its directory and process; :meth:`api` calls its API v1."""

    build: GiteaBuild
    work: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    http: HttpClient = field(default_factory=lambda: HttpClient(user_agent="deployctl-test-forge"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.work / "custom" / "conf" / "app.ini"

    def _run(self, *args: str) -> str:
        proc = subprocess.run([str(self.build.binary), "--config", str(self.config), "--work-path", str(self.work),
                               *args], capture_output=True, text=True, env=self._env(), timeout=300)
        if proc.returncode != 0:
            raise LocalClusterError(f"gitea {args[0]} failed (exit {proc.returncode}): "
                                    f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc.stdout

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITEA_")}
        env["GITEA_WORK_DIR"] = str(self.work)
        env["HOME"] = str(self.work / "home")
        env["USER"] = _user()
        return env

    def prepare(self) -> None:
        """Write app.ini, create the database and the admin user (once per directory)."""
        if self.config.exists():
            return
        for sub in ("custom/conf", "data", "repos", "log", "home"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self.config.write_text(_APP_INI.format(
            user=_user(), work=self.work, port=self.port, static=self.build.module_dir,
            secret=secrets.token_hex(32), internal=_internal_token(),
        ))
        self._run("migrate")
        self._run("admin", "user", "create", "--admin", "--username", ADMIN, "--password", PASSWORD,
                  "--email", f"{ADMIN}@example.com", "--must-change-password=false")

    def start(self, *, timeout: float = 120.0) -> None:
        """Start the server and wait until its API answers (``timeout`` is a ceiling, not a sleep)."""
        self.prepare()
        log_file = (self.work / "log" / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.build.binary), "web", "--config", str(self.config), "--work-path", str(self.work)],
            stdout=log_file, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalClusterError(f"gitea exited with {self.process.returncode}; see {self.work}/log")
            try:
                self.api("GET", "/version")
                log.info("gitea.started", url=self.url)
                return
            except HttpError:
                time.sleep(0.2)
        self.stop()
        raise LocalClusterError(f"gitea did not answer on {self.url} within {timeout:g}s; see {self.work}/log")

    def stop(self, *, grace: float = 20.0) -> None:
        self.http.close()
        process, self.process = self.process, None
        processes.stop(process, grace=grace)

    # -- the API, as the tests drive it ---------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, *, user: str | None = None,
            basic: tuple[str, str] | None = None) -> Any:
        """Call /api/v1``path`` as ``user`` (its token) or with ``basic`` auth; returns the decoded JSON."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if basic is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        elif user is not None:
            headers["Authorization"] = f"token {self.token(user)}"
        response = self.http.request(method, f"{self.url}/api/v1{path}", deadline=60, headers=headers, body=data)
        if response.status >= 400:
            raise LocalClusterError(f"gitea: {method} {path}: HTTP {response.status}: {response.body[:500]!r}")
        return json.loads(response.body) if response.body.strip() else None

    def token(self, user: str) -> str:
        """An all-scopes API token of ``user`` (made once, with basic auth as the issue's recipe says)."""
        if user not in self.tokens:
            made = self.api("POST", f"/users/{user}/tokens", {"name": f"t-{secrets.token_hex(4)}", "scopes": ["all"]},
                            basic=(user, PASSWORD))
            self.tokens[user] = made["sha1"]
        return self.tokens[user]

    def create_user(self, name: str, *, full_name: str | None = None) -> dict[str, Any]:
        user: dict[str, Any] = self.api("POST", "/admin/users", {
            "username": name, "email": f"{name}@example.com", "password": PASSWORD, "must_change_password": False,
            "full_name": full_name or name,
        }, user=ADMIN)
        return user


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "root")


def _internal_token() -> str:
    # Gitea's INTERNAL_TOKEN is a JWT-looking string; any long random value of that shape is accepted
    def part(n: int) -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=")

    return f"{part(24)}.{part(48)}.{part(32)}"
