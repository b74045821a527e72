"""The registry edge: resolve image tags to manifest digests over the OCI distribution API.

One ``RegistryClient`` per run. It asks each registry ``HEAD /v2/<name>/manifests/<tag>`` (GET when
the HEAD carries no ``Docker-Content-Digest``) once per distinct reference, concurrently and bounded,
speaks the bearer-token and Basic auth challenges, and turns every outcome into a ``Resolution``:
found, missing, unreachable, unauthorized or error. Nothing here raises for a registry's answer.

Credentials come from ``DEPLOYCTL_REGISTRY_*`` variables or ``~/.docker/config.json`` (``auths``,
``credHelpers``, ``credsStore``) and are never logged or put in messages. Parsing of challenges and
docker config is pure and lives here too, next to the one place that uses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Literal

import structlog

from deployctl import settings
from deployctl.errors import InvalidInputError
from deployctl.model.imageref import ImageRef, InvalidImageRefError, parse_image_ref, short_digest

log = structlog.get_logger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

Status = Literal["found", "missing", "unreachable", "unauthorized", "error"]

_DOCKER_HUB = "docker.io"
_DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_TOKEN_SLACK_SECONDS = 10.0
_MAX_REDIRECTS = 3
_USER_AGENT = "deployctl-registry/0.1"


class RegistryConfigError(InvalidInputError):
    """Registry credentials configuration (docker config, DEPLOYCTL_REGISTRY_*) is malformed."""


@dataclass(frozen=True)
class Resolution:
    """What the registry said about one image reference."""

    reference: str
    status: Status
    digest: str | None = None
    media_type: str | None = None
    message: str | None = None

    @property
    def found(self) -> bool:
        return self.status == "found"

    def pinned(self) -> str:
        """The reference as written, pinned to the resolved digest: ``shop/web:<sha>@sha256:...``."""
        if self.digest is None:
            raise ValueError(f"{self.reference} was not resolved ({self.status}); there is no digest to pin")
        return parse_image_ref(self.reference).with_digest(self.digest).familiar()


def check_retagged(
    expected_digest: str, resolution: Resolution, *, tested_in: str | None = None
) -> str | None:
    """A message if the tag now points to a different manifest than ``expected_digest``, else None.

    Only a found resolution can disagree; missing/unreachable are reported by their own messages.
    """
    if not resolution.found or resolution.digest == expected_digest:
        return None
    where = f"in {tested_in}" if tested_in else "when it was tested"
    try:
        shown = parse_image_ref(resolution.reference).display()
    except InvalidImageRefError:
        shown = resolution.reference
    return (
        f"{shown} now points to {short_digest(resolution.digest or '')}, not {short_digest(expected_digest)} "
        f"which ran {where}: the artifact changed after it was tested (was the tag re-pushed?). "
        "Deploy the tested digest, or pass --allow-retagged to accept the new one"
    )


# --- credentials (parsing is pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """A username and password for one registry; ``source`` says where it came from (for messages)."""

    username: str
    password: str = field(repr=False)
    source: str = "explicit"


@dataclass(frozen=True)
class DockerConfig:
    """The registry parts of ``~/.docker/config.json``, keyed by normalised registry host."""

    auths: Mapping[str, Credential] = field(default_factory=dict)
    cred_helpers: Mapping[str, str] = field(default_factory=dict)
    creds_store: str | None = None


def normalize_registry_host(key: str) -> str:
    """A docker config key as a registry host: ``https://index.docker.io/v1/`` -> ``docker.io``."""
    text = key.strip()
    if "://" in text:
        text = urllib.parse.urlsplit(text).netloc
    text = text.split("/", 1)[0].lower()
    return _DOCKER_HUB if text in _DOCKER_HUB_ALIASES else text


def decode_docker_auth(value: str, *, source: str = "docker config") -> Credential:
    """Decode a docker config ``auth`` value (base64 of ``user:password``)."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise RegistryConfigError(f"{source}: an 'auth' value is not base64 of 'user:password'") from exc
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        raise RegistryConfigError(f"{source}: an 'auth' value does not decode to 'user:password'")
    return Credential(username=username, password=password, source=source)


def parse_docker_config(data: object, *, source: str = "docker config") -> DockerConfig:
    """Read ``auths``, ``credHelpers`` and ``credsStore`` from a parsed docker config document."""
    if not isinstance(data, dict):
        raise RegistryConfigError(f"{source}: expected a JSON object")
    auths: dict[str, Credential] = {}
    raw_auths = data.get("auths", {})
    if not isinstance(raw_auths, dict):
        raise RegistryConfigError(f"{source}: 'auths' must be an object of registry -> {{auth: ...}}")
    for key, entry in raw_auths.items():
        if not isinstance(entry, dict):
            raise RegistryConfigError(f"{source}: auths[{key!r}] must be an object")
        host = normalize_registry_host(str(key))
        if entry.get("auth"):
            auths[host] = decode_docker_auth(str(entry["auth"]), source=source)
        elif entry.get("username") and entry.get("password") is not None:
            auths[host] = Credential(str(entry["username"]), str(entry["password"]), source)
    helpers = data.get("credHelpers", {})
    if not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
        raise RegistryConfigError(f"{source}: 'credHelpers' must be an object of registry -> helper name")
    store = data.get("credsStore")
    if store is not None and not isinstance(store, str):
        raise RegistryConfigError(f"{source}: 'credsStore' must be a helper name")
    return DockerConfig(
        auths=auths,
        cred_helpers={normalize_registry_host(str(k)): v for k, v in helpers.items()},
        creds_store=store or None,
    )


def env_host_key(host: str) -> str:
    """``DEPLOYCTL_REGISTRY_<HOST>_*`` names: ``reg.example.com:5000`` -> ``REG_EXAMPLE_COM_5000``."""
    return re.sub(r"[^A-Z0-9]", "_", host.upper())


def env_credential(env: Mapping[str, str], host: str | None) -> Credential | None:
    """Credentials from ``DEPLOYCTL_REGISTRY_<HOST>_USERNAME/_PASSWORD`` (host given) or the global pair."""
    prefix = f"{settings.REGISTRY_HOST.name}{env_host_key(host)}_" if host else settings.REGISTRY_HOST.name
    username, password = env.get(prefix + "USERNAME"), env.get(prefix + "PASSWORD")
    if username is None and password is None:
        return None
    if not username or password is None:
        raise RegistryConfigError(f"set both {prefix}USERNAME and {prefix}PASSWORD, or neither")
    return Credential(username, password, f"{prefix}USERNAME/PASSWORD")


def parse_helper_output(stdout: str, *, helper: str) -> Credential | None:
    """Parse ``docker-credential-<helper> get`` output; identity tokens are not supported (None)."""
    try:
        data = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    username, secret = data.get("Username"), data.get("Secret")
    if not isinstance(username, str) or not isinstance(secret, str) or not username or username == "<token>":
        return None
    return Credential(username, secret, f"docker-credential-{helper}")


HelperRunner = Callable[[str, str], "Credential | None"]


def run_credential_helper(helper: str, server: str) -> Credential | None:
    """Ask ``docker-credential-<helper> get`` for ``server``; None if it is absent or has nothing."""
    binary = shutil.which(f"docker-credential-{helper}")
    if binary is None:
        log.warning("registry.credential_helper_missing", helper=helper, server=server)
        return None
    try:
        done = subprocess.run(
            [binary, "get"], input=server, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning(
            "registry.credential_helper_failed", helper=helper, server=server, error=type(exc).__name__
        )
        return None
    if done.returncode != 0:
        # "credentials not found" is the usual answer for a registry the helper does not know.
        log.debug("registry.credential_helper_none", helper=helper, server=server, returncode=done.returncode)
        return None
    return parse_helper_output(done.stdout, helper=helper)


class CredentialStore:
    """Finds credentials for a registry host.

    Order: ``DEPLOYCTL_REGISTRY_<HOST>_USERNAME/_PASSWORD``; docker config ``credHelpers[host]``,
    ``credsStore``, ``auths[host]``; then the global ``DEPLOYCTL_REGISTRY_USERNAME/_PASSWORD``.
    Helper answers are cached per store. Thread-safe.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        docker_config: DockerConfig | None = None,
        static: Mapping[str, Credential] | None = None,
        helper_runner: HelperRunner = run_credential_helper,
    ) -> None:
        self._env = dict(env or {})
        self._docker = docker_config or DockerConfig()
        self._static = {normalize_registry_host(k): v for k, v in (static or {}).items()}
        self._run_helper = helper_runner
        self._cache: dict[str, Credential | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] | None = None, *, docker_config_path: Path | None = None
    ) -> CredentialStore:
        """The store a user expects: ``os.environ`` and ``${DOCKER_CONFIG:-~/.docker}/config.json``."""
        env = dict(os.environ if env is None else env)
        if docker_config_path is None:
            base = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
            docker_config_path = base / "config.json"
        return cls(env=env, docker_config=load_docker_config(docker_config_path))

    @classmethod
    def anonymous(cls) -> CredentialStore:
        """A store with no credentials at all."""
        return cls()

    def lookup(self, host: str) -> Credential | None:
        host = normalize_registry_host(host)
        with self._lock:
            if host in self._cache:
                return self._cache[host]
        found = self._find(host)
        with self._lock:
            self._cache[host] = found
        return found

    def _find(self, host: str) -> Credential | None:
        if host in self._static:
            return self._static[host]
        found = env_credential(self._env, host)
        if found is not None:
            return found
        server = _DOCKER_HUB_CONFIG_KEY if host == _DOCKER_HUB else host
        helper = self._docker.cred_helpers.get(host)
        if helper is not None:
            found = self._run_helper(helper, server)
        elif self._docker.creds_store is not None:
            found = self._run_helper(self._docker.creds_store, server)
        if found is None:
            found = self._docker.auths.get(host)
        return found if found is not None else env_credential(self._env, None)


def load_docker_config(path: Path) -> DockerConfig:
    """Read a docker config file; an absent file is an empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DockerConfig()
    except OSError as exc:
        raise RegistryConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    return parse_docker_config(data, source=str(path))


# --- WWW-Authenticate (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a scheme (lowercase) and its parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scope(self) -> str | None:
        return self.params.get("scope")


_TOKEN68 = re.compile(r"\s*([A-Za-z0-9._~+/-]+=*)\s*(?:,|$)")
_AUTH_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*')
_SCHEME = re.compile(r"\s*,*\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$|(?=,))")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into challenges (RFC 7235 syntax, quoted strings unescaped)."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        match = _SCHEME.match(header, pos)
        if match is None:
            break
        scheme, pos = match.group(1).lower(), match.end()
        params: dict[str, str] = {}
        token68 = _TOKEN68.match(header, pos)
        if token68 is not None:
            pos = token68.end()
        while token68 is None and pos < len(header):
            param = _AUTH_PARAM.match(header, pos)
            if param is None:
                break
            name, quoted, bare = param.groups()
            params[name.lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            pos = param.end()
            if pos < len(header) and header[pos] == ",":
                pos += 1
                continue
            break
        challenges.append(Challenge(scheme, params))
        while pos < len(header) and header[pos] in " ,":
            pos += 1
    return challenges


def pick_challenge(challenges: Iterable[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer if offered, else Basic, else None."""
    by_scheme = {c.scheme: c for c in challenges}
    return by_scheme.get("bearer") or by_scheme.get("basic")


def repository_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


# --- the HTTP edge -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Unreachable(Exception):
    """A connection-level failure (refused, DNS, timeout, TLS)."""


@dataclass
class _HostState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    pinged: bool = False
    unreachable: str | None = None
    challenge: Challenge | None = None


@dataclass(frozen=True)
class _Denied:
    """Why a request could not be authorised: ``status`` is "unauthorized" or "unreachable"."""

    status: Status
    message: str


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def api_base_url(registry: str, *, insecure_registries: Collection[str] = ()) -> str:
    """Where a registry's API lives: plain http for loopback and listed insecure hosts, else https."""
    api_host = _DOCKER_HUB_API if registry == _DOCKER_HUB else registry
    plain = registry in insecure_registries or registry.rsplit(":", 1)[0] in insecure_registries
    scheme = "http" if plain or _is_loopback(registry) else "https"
    return f"{scheme}://{api_host}"


class RegistryClient:
    """Resolves image references to digests; one instance per run (results are cached on it)."""

    def __init__(
        self,
        *,
        credentials: CredentialStore | None = None,
        timeout: float = 10.0,
        concurrency: int = 16,
        insecure_registries: Iterable[str] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``credentials=None`` reads them from the environment (see ``CredentialStore.from_environment``).

        Loopback registries and those in ``insecure_registries`` are spoken to over plain http.
        """
        self._credentials = credentials if credentials is not None else CredentialStore.from_environment()
        self._timeout = timeout
        self._concurrency = max(1, concurrency)
        self._insecure = {normalize_registry_host(h) for h in insecure_registries}
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._lock = threading.Lock()
        self._results: dict[str, Future[Resolution]] = {}
        self._hosts: dict[str, _HostState] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, float] | _Denied] = {}
        self._token_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._requests: Counter[str] = Counter()
        self._executor: ThreadPoolExecutor | None = None

    # -- public API --

    def resolve(self, reference: str) -> Resolution:
        """Resolve one reference (cached: asking again makes no request)."""
        return self._result(reference, self._submit(reference))

    def resolve_many(self, references: Iterable[str]) -> dict[str, Resolution]:
        """Resolve many references concurrently: one manifest request per distinct reference."""
        futures = {text: self._submit(text) for text in dict.fromkeys(references)}
        return {text: self._result(text, future) for text, future in futures.items()}

    @property
    def requests_made(self) -> Counter[str]:
        """Requests made so far, by ``"<METHOD> <kind>"`` (kind: ping, manifest, token)."""
        with self._lock:
            return Counter(self._requests)

    def close(self) -> None:
        """Stop the worker threads and close idle connections."""
        with self._lock:
            executor, self._executor = self._executor, None
            idle, self._idle = self._idle, {}
        if executor is not None:
            executor.shutdown(wait=True)
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- scheduling and cache --

    def _submit(self, text: str) -> Future[Resolution]:
        try:
            key = str(parse_image_ref(text))
        except InvalidImageRefError as exc:
            future: Future[Resolution] = Future()
            future.set_result(Resolution(text, "error", message=str(exc)))
            return future
        with self._lock:
            existing = self._results.get(key)
            if existing is not None:
                return existing
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="registry")
            future = self._executor.submit(self._resolve_now, text)
            self._results[key] = future
            return future

    @staticmethod
    def _result(text: str, future: Future[Resolution]) -> Resolution:
        resolution = future.result()
        return resolution if resolution.reference == text else replace(resolution, reference=text)

    def _resolve_now(self, text: str) -> Resolution:
        ref = parse_image_ref(text)
        try:
            resolution = self._resolve_ref(text, ref)
        except Exception as exc:  # noqa: BLE001 - one bad answer must not take down a whole run
            log.error("registry.resolve_failed", reference=text, error=repr(exc))
            resolution = Resolution(text, "error", message=f"checking {ref.display()} failed: {exc}")
        log.debug("registry.resolved", reference=text, status=resolution.status, digest=resolution.digest)
        return resolution

    # -- the protocol --

    def _resolve_ref(self, text: str, ref: ImageRef) -> Resolution:
        host = self._host_state(ref.registry)
        if host.unreachable is not None:
            return Resolution(text, "unreachable", message=self._unreachable_message(ref, host.unreachable))
        path = f"/v2/{ref.repository}/manifests/{ref.manifest_reference}"
        response = self._authorised_manifest_request(text, ref, "HEAD", path)
        if isinstance(response, Resolution):
            return response
        if response.status == 200 and not response.header("docker-content-digest"):
            response = self._authorised_manifest_request(text, ref, "GET", path)
            if isinstance(response, Resolution):
                return response
        if response.status == 200:
            digest = response.header("docker-content-digest")
            if response.body and (digest is None or not digest.startswith("sha256:")):
                digest = "sha256:" + hashlib.sha256(response.body).hexdigest()
            if ref.digest is not None:
                digest = ref.digest
            media_type = (response.header("content-type") or "").split(";", 1)[0].strip() or None
            return Resolution(text, "found", digest=digest, media_type=media_type)
        if response.status == 404:
            return Resolution(text, "missing", message=f"no image {ref.display()} — did its build finish?")
        if response.status in (401, 403):
            return Resolution(text, "unauthorized", message=self._denied_message(ref, response.status))
        if response.status in (502, 503, 504):
            return Resolution(
                text, "unreachable", message=self._unreachable_message(ref, f"it answered {response.status}")
            )
        return Resolution(
            text,
            "error",
            message=f"registry {ref.registry} answered {response.status} for {ref.display()}"
            + _error_detail(response.body),
        )

    def _authorised_manifest_request(
        self, text: str, ref: ImageRef, method: str, path: str
    ) -> _Response | Resolution:
        """Send a manifest request with auth; on a 401 re-read the challenge, re-authorise once and retry."""
        host = self._host_state(ref.registry)
        sent: str | None = None
        response: _Response | None = None
        for attempt in range(2):
            authorization = self._authorization(ref, host.challenge, fresh=attempt > 0)
            if isinstance(authorization, _Denied):
                return Resolution(text, authorization.status, message=authorization.message)
            if response is not None and authorization == sent:
                return response  # nothing new to offer: the same Basic credentials were refused
            sent = authorization
            headers = {"Accept": _ACCEPT}
            if authorization is not None:
                headers["Authorization"] = authorization
            try:
                response = self._request(method, self._url(ref.registry, path), headers, kind="manifest")
            except _Unreachable as exc:
                return Resolution(text, "unreachable", message=self._unreachable_message(ref, str(exc)))
            if response.status != 401 or attempt > 0:
                return response
            challenge = pick_challenge(parse_www_authenticate(response.header("www-authenticate") or ""))
            if challenge is None:
                return response
            with host.lock:
                host.challenge = challenge
        raise AssertionError("unreachable")

    def _authorization(
        self, ref: ImageRef, challenge: Challenge | None, *, fresh: bool
    ) -> str | None | _Denied:
        if challenge is None:
            return None
        credential = self._credentials.lookup(ref.registry)
        if challenge.scheme == "basic":
            if credential is None:
                return None
            pair = f"{credential.username}:{credential.password}".encode()
            return "Basic " + base64.b64encode(pair).decode()
        token = self._token(ref, challenge, credential, fresh=fresh)
        return token if isinstance(token, _Denied) else f"Bearer {token}"

    def _token(
        self, ref: ImageRef, challenge: Challenge, credential: Credential | None, *, fresh: bool
    ) -> str | _Denied:
        realm = challenge.realm
        if not realm:
            return _Denied(
                "unauthorized", f"registry {ref.registry} asked for a bearer token without a realm"
            )
        service = challenge.service or ""
        key = (realm, service, repository_scope(ref.repository))
        with self._lock:
            lock = self._token_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                cached = self._tokens.get(key)
            if isinstance(cached, _Denied):
                return cached  # the token service said no once this run; asking again won't change it
            if cached is not None and not fresh and cached[1] > time.monotonic():
                return cached[0]
            query = {"scope": key[2]}
            if service:
                query["service"] = service
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
            headers = {}
            if credential is not None:
                pair = f"{credential.username}:{credential.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            try:
                response = self._request("GET", url, headers, kind="token")
            except _Unreachable as exc:
                return _Denied(
                    "unreachable",
                    f"the token service of {ref.registry} at {_safe_url(realm)} is unreachable ({exc})",
                )
            if response.status in (401, 403):
                denied = _Denied("unauthorized", self._denied_message(ref, response.status))
                with self._lock:
                    self._tokens[key] = denied
                return denied
            if response.status != 200:
                return _Denied(
                    "unauthorized",
                    f"the token service of {ref.registry} answered {response.status} for {ref.repository}"
                    + _error_detail(response.body),
                )
            try:
                data = json.loads(response.body)
                token = data.get("token") or data.get("access_token")
                expires_in = float(data.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                token = None
            if not isinstance(token, str) or not token:
                return _Denied("unauthorized", f"the token service of {ref.registry} returned no token")
            expires = time.monotonic() + max(expires_in - _TOKEN_SLACK_SECONDS, 1.0)
            with self._lock:
                self._tokens[key] = (token, expires)
            return token

    def _host_state(self, registry: str) -> _HostState:
        """The host's auth state, learnt once with ``GET /v2/`` so manifest requests go out authorised."""
        with self._lock:
            state = self._hosts.setdefault(registry, _HostState())
        if state.pinged:
            return state
        with state.lock:
            if state.pinged:
                return state
            try:
                response = self._request("GET", self._url(registry, "/v2/"), {}, kind="ping")
            except _Unreachable as exc:
                state.unreachable = str(exc)
            else:
                if response.status == 401:
                    state.challenge = pick_challenge(
                        parse_www_authenticate(response.header("www-authenticate") or "")
                    )
                elif response.status in (502, 503, 504):
                    state.unreachable = f"it answered {response.status}"
            state.pinged = True
            if state.unreachable is not None:
                log.warning("registry.unreachable", registry=registry, reason=state.unreachable)
        return state

    # -- messages --

    def _unreachable_message(self, ref: ImageRef, reason: str) -> str:
        return f"registry {ref.registry} is unreachable ({reason}); could not check {ref.display()}"

    def _denied_message(self, ref: ImageRef, status: int) -> str:
        credential = self._credentials.lookup(ref.registry)
        if credential is None:
            return (
                f"registry {ref.registry} needs credentials to read {ref.repository}: run "
                f"`docker login {ref.registry}` or set "
                f"DEPLOYCTL_REGISTRY_{env_host_key(ref.registry)}_USERNAME and _PASSWORD"
            )
        if status == 403:
            return (
                f"registry {ref.registry} denied {credential.username} ({credential.source}) access to "
                f"{ref.repository}"
            )
        return (
            f"registry {ref.registry} rejected the credentials for {credential.username} from "
            f"{credential.source} (or {ref.repository} does not exist)"
        )

    # -- HTTP with pooled keep-alive connections --

    def _url(self, registry: str, path: str) -> str:
        return api_base_url(registry, insecure_registries=self._insecure) + path

    def _request(self, method: str, url: str, headers: Mapping[str, str], *, kind: str) -> _Response:
        """One request, following up to three redirects (dropping Authorization across hosts)."""
        send = {"User-Agent": _USER_AGENT, **headers}
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            with self._lock:
                self._requests[f"{method} {kind}"] += 1
            response = self._send(parts.scheme, parts.netloc, method, target, send)
            location = response.header("location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response
            next_url = urllib.parse.urljoin(url, location)
            if urllib.parse.urlsplit(next_url).netloc != parts.netloc:
                send = {k: v for k, v in send.items() if k.lower() != "authorization"}
            url = next_url
        raise _Unreachable(f"more than {_MAX_REDIRECTS} redirects from {_safe_url(url)}")

    def _send(
        self, scheme: str, netloc: str, method: str, target: str, headers: Mapping[str, str]
    ) -> _Response:
        key = (scheme, netloc)
        for attempt in range(2):
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(scheme, netloc)
            try:
                conn.request(method, target, headers=dict(headers))
                raw = conn.getresponse()
                body = raw.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection; retry on a new one
                raise _Unreachable(_describe_connection_error(exc, netloc)) from exc
            response = _Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, body)
            if raw.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.setdefault(key, []).append(conn)
            return response
        raise AssertionError("unreachable")

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self._timeout, context=self._ssl_context)
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=self._timeout)
        raise _Unreachable(f"unsupported URL scheme {scheme!r}")


def _describe_connection_error(exc: BaseException, netloc: str) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection to {netloc} refused"
    if isinstance(exc, TimeoutError):
        return f"no answer from {netloc} in time"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {netloc} failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{netloc}: {exc.strerror}"
    return f"{netloc}: {type(exc).__name__}"


def _safe_url(url: str) -> str:
    """A URL without its query or userinfo, fit for messages."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def _error_detail(body: bytes) -> str:
    """``: <message>`` from a distribution error body, or nothing."""
    try:
        errors = json.loads(body).get("errors") or []
        message = errors[0].get("message") or errors[0].get("code")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""
    return f": {message}" if isinstance(message, str) and message else ""
