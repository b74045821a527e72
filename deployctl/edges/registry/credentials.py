"""Registry credentials per host: docker/podman auth files, credential helpers, ``DEPLOYCTL_REGISTRY_*``.

Parsing is pure; :class:`CredentialStore` finds the credential for one registry host. Passwords are
never logged or put in messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from deployctl import settings
from deployctl.errors import InvalidInputError

log = structlog.get_logger(__name__)

DOCKER_HUB = "docker.io"
HOST_ENV = settings.REGISTRY_ONE_HOST.name
_MAX_AUTH_FILE_BYTES = 4 * 1024 * 1024
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class RegistryConfigError(InvalidInputError):
    """Registry credentials configuration (docker config, DEPLOYCTL_REGISTRY_*) is malformed."""


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
    return DOCKER_HUB if text in DOCKER_HUB_ALIASES else text


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
    prefix = f"DEPLOYCTL_REGISTRY_{env_host_key(host)}_" if host else "DEPLOYCTL_REGISTRY_"
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
    """Finds the credential for one registry host; a credential is only ever returned for its own host.

    Order: ``DEPLOYCTL_REGISTRY_<HOST>_USERNAME/_PASSWORD``; ``DEPLOYCTL_REGISTRY_USERNAME/_PASSWORD`` when
    ``host`` is ``DEPLOYCTL_REGISTRY_HOST``; then each auth file in turn (``REGISTRY_AUTH_FILE``,
    ``$XDG_RUNTIME_DIR/containers/auth.json``, ``${DOCKER_CONFIG:-~/.docker}/config.json``):
    ``credHelpers[host]``, ``credsStore``, ``auths[host]``. Nothing else: an unknown host is anonymous.
    Helper answers are cached per store. Thread-safe.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        docker_config: DockerConfig | None = None,
        auth_files: Sequence[DockerConfig] = (),
        static: Mapping[str, Credential] | None = None,
        helper_runner: HelperRunner = run_credential_helper,
    ) -> None:
        """``auth_files`` are asked in order, then ``docker_config``; ``env`` holds ``DEPLOYCTL_REGISTRY_*``."""
        self._env = dict(env or {})
        self._global_host = global_credential_host(self._env)
        self._files = [*auth_files, *([docker_config] if docker_config is not None else [])]
        self._static = {normalize_registry_host(k): v for k, v in (static or {}).items()}
        self._run_helper = helper_runner
        self._cache: dict[str, Credential | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] | None = None, *, docker_config_path: Path | None = None
    ) -> CredentialStore:
        """The store a user expects: ``os.environ`` and the auth files docker, podman, skopeo and crane use."""
        env = dict(os.environ if env is None else env)
        if docker_config_path is None:
            base = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
            docker_config_path = base / "config.json"
        files = [Path(env["REGISTRY_AUTH_FILE"])] if env.get("REGISTRY_AUTH_FILE") else []
        if env.get("XDG_RUNTIME_DIR"):
            files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
        return cls(
            env=env,
            auth_files=[load_docker_config(path) for path in files],
            docker_config=load_docker_config(docker_config_path),
        )

    @classmethod
    def anonymous(cls) -> CredentialStore:
        """A store with no credentials at all."""
        return cls()

    def lookup(self, host: str) -> Credential | None:
        """The credential keyed by exactly this registry host, or None (anonymous)."""
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
        if self._global_host is not None and host == self._global_host:
            return env_credential(self._env, None)
        server = DOCKER_HUB_CONFIG_KEY if host == DOCKER_HUB else host
        for config in self._files:
            helper = config.cred_helpers.get(host)
            if helper is not None:
                found = self._run_helper(helper, server)
            elif config.creds_store is not None:
                found = self._run_helper(config.creds_store, server)
            if found is None:
                found = config.auths.get(host)
            if found is not None:
                return found
        return None


def global_credential_host(env: Mapping[str, str]) -> str | None:
    """The one host ``DEPLOYCTL_REGISTRY_USERNAME/_PASSWORD`` belong to (``DEPLOYCTL_REGISTRY_HOST``).

    The pair without a host is an error: it used to be offered to any registry a deploy repo names.
    """
    pair = env_credential(env, None)
    host = env.get(HOST_ENV, "").strip()
    if pair is None:
        return None
    if not host:
        raise RegistryConfigError(
            f"DEPLOYCTL_REGISTRY_USERNAME/PASSWORD are set but {HOST_ENV} is not: set it to the registry "
            "host[:port] they belong to (they are sent to no other host), or use "
            "DEPLOYCTL_REGISTRY_<HOST>_USERNAME/_PASSWORD or `docker login <host>`"
        )
    return normalize_registry_host(host)


def load_docker_config(path: Path) -> DockerConfig:
    """Read a docker config or containers auth.json file; an absent file is an empty config."""
    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_AUTH_FILE_BYTES + 1)
    except FileNotFoundError:
        return DockerConfig()
    except OSError as exc:
        raise RegistryConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(raw) > _MAX_AUTH_FILE_BYTES:
        raise RegistryConfigError(
            f"{path}: larger than {_MAX_AUTH_FILE_BYTES // 1024} KiB; not an auth file?"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryConfigError(f"{path}: not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    return parse_docker_config(data, source=str(path))
