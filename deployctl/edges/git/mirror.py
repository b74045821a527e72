"""A local bare mirror of the deploy repo, kept up to date with pygit2 fetches.

The source is a local path, a ``file://`` URL, an ``https://`` URL (with a token from
$DEPLOYCTL_GIT_TOKEN when set) or an ssh URL (``ssh://`` or ``git@host:path``, with the key in
$DEPLOYCTL_GIT_SSH_KEY, a file path or the key itself, and an optional passphrase in
$DEPLOYCTL_GIT_SSH_PASSPHRASE). A credential goes only to the host of the source URL: when a redirect
leads elsewhere and that host asks for credentials (or presents its TLS certificate), the fetch fails.
Plain ``http://`` is refused except on loopback: libgit2 follows the first redirect of a fetch whatever its
``follow_redirects`` option says, and only a TLS certificate check stops it at another host.
Each fetch has a total deadline ($DEPLOYCTL_GIT_FETCH_TIMEOUT seconds, default 120); a fetch still
running then is abandoned (at most one per mirror). Only the watched branch is fetched, forced, into
``refs/heads/<branch>`` of the mirror, so readers (:func:`deployctl.edges.git.repo.read_desired_state`)
read commits straight from it. Credentials never appear in logs or error messages.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pygit2
import structlog

from deployctl import settings
from deployctl.edges.http import is_loopback
from deployctl.errors import DeployctlError, InvalidInputError
from deployctl.redact import redact

log = structlog.get_logger(__name__)

TOKEN_ENV = settings.GIT_TOKEN.name
TOKEN_USER_ENV = settings.GIT_USERNAME.name
SSH_KEY_ENV = settings.GIT_SSH_KEY.name
SSH_PASSPHRASE_ENV = settings.GIT_SSH_PASSPHRASE.name
FETCH_TIMEOUT_ENV = settings.GIT_FETCH_TIMEOUT.name
DEFAULT_FETCH_TIMEOUT = 120.0
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>.+)$")


class MirrorError(DeployctlError):
    """The deploy repo cannot be fetched (unreachable, refused credentials, no such branch)."""


@dataclass(frozen=True)
class Source:
    """Where the deploy repo comes from, as pygit2 wants it, and how to show it in logs."""

    kind: str  # local, https, http, ssh
    url: str
    display: str
    ssh_user: str | None = None

    @property
    def host(self) -> str:
        """``host[:port]`` of an http(s) source, lowercase; the only host its token goes to."""
        return _host_of(self.url)


def _host_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.hostname or "") + (f":{parts.port}" if parts.port else "")


def classify(repo: str, *, cwd: Path | None = None) -> Source:
    """Parse ``--repo``: a path, file://, http(s):// or ssh URL. Userinfo is kept out of ``display``."""
    if not repo:
        raise InvalidInputError("--repo is empty; give a path or a URL of the deploy repo")
    if repo.startswith("file://"):
        path = urlsplit(repo).path
        return Source("local", path, repo)
    parts = urlsplit(repo)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        display = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return Source(parts.scheme, repo, display)
    if parts.scheme in ("ssh", "git+ssh"):
        host = parts.hostname or ""
        display = urlunsplit(("ssh", host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
        url = repo.replace("git+ssh://", "ssh://", 1)
        return Source("ssh", url, display, ssh_user=parts.username or "git")
    if parts.scheme and len(parts.scheme) > 1 and "://" in repo:
        raise InvalidInputError(
            f"--repo {repo}: unsupported scheme {parts.scheme!r}; use a path, file://, https:// or ssh://"
        )
    m = _SCP_LIKE.match(repo)
    if m and not Path(repo).exists():
        user = (m.group("user") or "git@").rstrip("@")
        return Source("ssh", repo, f"{m.group('host')}:{m.group('path')}", ssh_user=user)
    local = Path(repo)
    if not local.is_absolute():
        local = (cwd or Path.cwd()) / local
    return Source("local", str(local), str(local))


class _Credentials(pygit2.RemoteCallbacks):
    """Answers libgit2's credential requests from the environment, once per kind (no endless retry)."""

    def __init__(
        self, source: Source, environ: Mapping[str, str], *, expires: float, deadline: float
    ) -> None:
        super().__init__()
        self.source = source
        self.environ = environ
        self.asked = 0
        self.expires = expires
        self.deadline = deadline
        self.cancelled = threading.Event()

    def _check_deadline(self) -> None:
        if self.cancelled.is_set() or time.monotonic() > self.expires:
            raise MirrorError(self.deadline_message())

    def deadline_message(self) -> str:
        return f"{self.source.display}: no complete fetch within the {self.deadline:g} s deadline"

    def transfer_progress(self, stats: pygit2.remotes.TransferProgress) -> None:
        self._check_deadline()

    def sideband_progress(self, string: str) -> None:
        self._check_deadline()

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        wanted = urlsplit(self.source.url).hostname or ""
        if self.source.kind == "https" and host.decode(errors="replace").lower() != wanted.lower():
            raise MirrorError(
                f"{self.source.display}: redirected to {host.decode(errors='replace')}; deployctl fetches only "
                f"from {wanted} (fix --repo to the repo's real URL)"
            )
        if not valid:
            raise MirrorError(f"{self.source.display}: the TLS certificate of {wanted} is not valid")
        return True

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: int
    ) -> pygit2.Username | pygit2.UserPass | pygit2.Keypair:
        self._check_deadline()
        if self.source.kind in ("http", "https") and _host_of(url) != self.source.host:
            raise MirrorError(
                f"{self.source.display}: redirected to {_host_of(url)}, which asks for credentials; the token "
                f"is sent only to {self.source.host} (fix --repo to the repo's real URL)"
            )
        self.asked += 1
        if self.asked > 2:
            raise MirrorError(f"{self.source.display}: the credentials were refused")
        kinds = pygit2.enums.CredentialType
        if allowed_types & kinds.USERPASS_PLAINTEXT:
            token = self.environ.get(TOKEN_ENV)
            if not token:
                raise MirrorError(
                    f"{self.source.display} asks for credentials; set {TOKEN_ENV} to a token "
                    "that may read the repo"
                )
            return pygit2.UserPass(self.environ.get(TOKEN_USER_ENV) or "x-access-token", token)
        if allowed_types & kinds.SSH_KEY:
            key = self.environ.get(SSH_KEY_ENV)
            user = username_from_url or self.source.ssh_user or "git"
            passphrase = self.environ.get(SSH_PASSPHRASE_ENV, "")
            if not key:
                raise MirrorError(
                    f"{self.source.display} needs an ssh key; set {SSH_KEY_ENV} to the key file "
                    "(or the key itself)"
                )
            if "PRIVATE KEY" in key:
                return pygit2.KeypairFromMemory(user, None, key, passphrase)
            pub = key + ".pub"
            return pygit2.Keypair(user, pub if os.path.exists(pub) else None, key, passphrase)
        if allowed_types & kinds.USERNAME:
            return pygit2.Username(username_from_url or self.source.ssh_user or "git")
        raise MirrorError(f"{self.source.display}: the server asks for an unsupported kind of credentials")


def default_mirror_dir(repo: str, environ: Mapping[str, str] | None = None) -> Path:
    """$DEPLOYCTL_MIRROR_DIR, else ~/.cache/deployctl/mirrors/<hash of the repo URL>/deploy.git.

    The folder per repo matters: the mirror's parent folder is the default source root
    (:func:`deployctl.edges.git.repo.default_source_roots`), which must not hold other repos' mirrors."""
    env = os.environ if environ is None else environ
    base = settings.MIRROR_DIR.get(env)
    if base:
        return Path(base)
    digest = hashlib.sha256(repo.encode()).hexdigest()[:16]
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "deployctl" / "mirrors" / digest / "deploy.git"


class Mirror:
    """A bare mirror of one branch of the deploy repo. ``fetch()`` returns the branch head SHA."""

    def __init__(
        self, repo: str, path: str | Path, *, branch: str = "main", environ: Mapping[str, str] | None = None
    ) -> None:
        self.source = classify(repo)
        if self.source.kind == "http" and not is_loopback(self.source.host):
            raise InvalidInputError(
                f"--repo {self.source.display}: plain http is refused except on loopback (a redirect on it "
                "cannot be stopped, and a token would travel unencrypted); use https://"
            )
        self.path = Path(path)
        self.branch = branch
        self.environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._repo: pygit2.Repository | None = None
        self._abandoned: threading.Thread | None = None

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def _open(self) -> pygit2.Repository:
        if self._repo is None:
            if (self.path / "HEAD").exists():
                self._repo = pygit2.Repository(str(self.path))
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._repo = pygit2.init_repository(str(self.path), bare=True, initial_head=self.branch)
        return self._repo

    def fetch(self) -> str:
        """Fetch the branch from the source and return its head commit SHA, within the fetch deadline."""
        with self._lock:
            self._open()
            if self.source.kind == "local" and not Path(self.source.url).exists():
                raise MirrorError(f"the deploy repo {self.source.display} does not exist")
            if self._abandoned is not None and self._abandoned.is_alive():
                raise MirrorError(
                    f"cannot fetch {self.branch} from {self.source.display}: the previous fetch is still "
                    "running past its deadline"
                )
            deadline = _fetch_deadline(self.environ)
            # libgit2's per-read limit: an abandoned fetch from a silent server ends on its own
            milliseconds = max(1, int(deadline * 1000))
            pygit2.option(pygit2.enums.Option.SET_SERVER_CONNECT_TIMEOUT, milliseconds)
            pygit2.option(pygit2.enums.Option.SET_SERVER_TIMEOUT, milliseconds)
            callbacks = _Credentials(
                self.source, self.environ, expires=time.monotonic() + deadline, deadline=deadline
            )
            outcome: list[BaseException | None] = []
            worker = threading.Thread(
                target=self._fetch_into_mirror, args=(callbacks, outcome), name="mirror-fetch", daemon=True
            )
            worker.start()
            worker.join(deadline)
            if worker.is_alive():
                callbacks.cancelled.set()  # it stops at its next callback; a silent server keeps it waiting
                self._abandoned = worker
                raise MirrorError(f"cannot fetch {self.branch} from {callbacks.deadline_message()}")
            error = outcome[0] if outcome else None
            if isinstance(error, MirrorError):
                raise error
            if error is not None:
                raise MirrorError(
                    f"cannot fetch {self.branch} from {self.source.display}: "
                    f"{redact(_scrub(str(error), self.environ))}"
                ) from error
            ref = self._open().references.get(self.ref)
            if ref is None:
                raise MirrorError(f"the deploy repo {self.source.display} has no branch {self.branch!r}")
            return str(ref.target)

    def _fetch_into_mirror(self, callbacks: _Credentials, outcome: list[BaseException | None]) -> None:
        """The fetch itself, on its own thread and its own Repository object (it may be abandoned)."""
        try:
            repository = pygit2.Repository(str(self.path))
            remote = repository.remotes.create_anonymous(self.source.url)
            remote.fetch([f"+{self.ref}:{self.ref}"], callbacks=callbacks, depth=0)
        except (MirrorError, pygit2.GitError, KeyError, OSError, ValueError) as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    def head(self) -> str | None:
        """The branch head already in the mirror (no fetch), or None before the first fetch."""
        with self._lock:
            ref = self._open().references.get(self.ref)
            return str(ref.target) if ref is not None else None


def _fetch_deadline(environ: Mapping[str, str]) -> float:
    raw = environ.get(FETCH_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_FETCH_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise InvalidInputError(f"{FETCH_TIMEOUT_ENV}={raw!r}: give the fetch deadline in seconds, e.g. 120")
    return value


def _scrub(text: str, environ: Mapping[str, str]) -> str:
    for name in (TOKEN_ENV, SSH_PASSPHRASE_ENV):
        secret = environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text
