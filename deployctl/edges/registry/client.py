"""The registry edge: resolve image tags to manifest digests over the OCI distribution API.

One ``RegistryClient`` per run. It asks each registry ``HEAD /v2/<name>/manifests/<tag>`` (GET when
the HEAD carries no ``Docker-Content-Digest``) once per distinct reference, concurrently and bounded,
speaks the bearer-token and Basic auth challenges, and turns every outcome into a ``Resolution``:
found, missing, unreachable, unauthorized or error. Nothing here raises for a registry's answer.

Credentials come from :mod:`deployctl.edges.registry.credentials`, challenges are parsed in
:mod:`~deployctl.edges.registry.auth`, HTTP is :mod:`~deployctl.edges.registry.transport`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import TracebackType

import structlog

from deployctl.edges.http import HttpClient, HttpError, Response, ResponseTooLarge
from deployctl.edges.registry.auth import Challenge, parse_www_authenticate, pick_challenge, repository_scope
from deployctl.edges.registry.credentials import (
    Credential,
    CredentialStore,
    env_host_key,
    normalize_registry_host,
)
from deployctl.edges.registry.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Resolution,
    Status,
    check_retagged,
    error_detail,
)
from deployctl.edges.registry.transport import (
    USER_AGENT,
    answered_by_registry,
    api_base_url,
    realm_may_receive_credentials,
    safe_url,
)
from deployctl.model.imageref import ImageRef, InvalidImageRefError, parse_image_ref
from deployctl.model.vocabulary import ImageStatus

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Credential",
    "CredentialStore",
    "RegistryClient",
    "Resolution",
    "check_retagged",
]

log = structlog.get_logger(__name__)

_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_TOKEN_SLACK_SECONDS = 10.0
_MAX_REDIRECTS = 3
_MANIFEST_BODY = 4 * 1024 * 1024
_SMALL_BODY = 1024 * 1024


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

        ``timeout`` is the total deadline of each call (connect to last byte, retries included).
        Loopback registries and those in ``insecure_registries`` are spoken to over plain http.
        """
        self._credentials = credentials if credentials is not None else CredentialStore.from_environment()
        self._concurrency = max(1, concurrency)
        self._insecure = {normalize_registry_host(h) for h in insecure_registries}
        self._timeout = timeout
        self._http = HttpClient(user_agent=USER_AGENT, ssl_context=ssl_context)
        self._lock = threading.Lock()
        self._results: dict[str, Future[Resolution]] = {}
        self._hosts: dict[str, _HostState] = {}
        self._tokens: dict[tuple[str, str, str, str], tuple[str, float] | _Denied] = {}
        self._token_locks: dict[tuple[str, str, str, str], threading.Lock] = {}
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
        if executor is not None:
            executor.shutdown(wait=True)
        self._http.close()

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
            future.set_result(Resolution(text, ImageStatus.ERROR, message=str(exc)))
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
            resolution = Resolution(text, ImageStatus.ERROR, message=f"checking {ref.display()} failed: {exc}")
        log.debug("registry.resolved", reference=text, status=resolution.status, digest=resolution.digest)
        return resolution

    # -- the protocol --

    def _resolve_ref(self, text: str, ref: ImageRef) -> Resolution:
        host = self._host_state(ref.registry)
        if host.unreachable is not None:
            return Resolution(text, ImageStatus.UNREACHABLE, message=self._unreachable_message(ref, host.unreachable))
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
            return Resolution(text, ImageStatus.FOUND, digest=digest, media_type=media_type)
        if response.status == 404:
            return Resolution(text, ImageStatus.MISSING, message=f"no image {ref.display()} — did its build finish?")
        if response.status in (401, 403):
            return Resolution(text, ImageStatus.UNAUTHORIZED, message=self._denied_message(ref, response.status))
        if response.status in (502, 503, 504):
            return Resolution(
                text, ImageStatus.UNREACHABLE, message=self._unreachable_message(ref, f"it answered {response.status}")
            )
        return Resolution(
            text,
            ImageStatus.ERROR,
            message=f"registry {ref.registry} answered {response.status} for {ref.display()}"
            + error_detail(response.body),
        )

    def _authorised_manifest_request(
        self, text: str, ref: ImageRef, method: str, path: str
    ) -> Response | Resolution:
        """Send a manifest request with auth; on a 401 re-read the challenge, re-authorise once and retry."""
        host = self._host_state(ref.registry)
        sent: str | None = None
        response: Response | None = None
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
            url = self._url(ref.registry, path)
            try:
                response = self._request(method, url, headers, kind="manifest")
            except ResponseTooLarge as exc:
                return Resolution(text, ImageStatus.ERROR, message=f"checking {ref.display()} failed: {exc}")
            except HttpError as exc:
                return Resolution(text, ImageStatus.UNREACHABLE, message=self._unreachable_message(ref, str(exc)))
            if response.status != 401 or attempt > 0 or not answered_by_registry(response.url, url):
                return response  # a challenge from a host a redirect led to is never answered
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
                ImageStatus.UNAUTHORIZED, f"registry {ref.registry} asked for a bearer token without a realm"
            )
        service = challenge.service or ""
        # the registry is part of the key: a token fetched for one registry is never sent to another
        key = (ref.registry, realm, service, repository_scope(ref.repository))
        with self._lock:
            lock = self._token_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                cached = self._tokens.get(key)
            if isinstance(cached, _Denied):
                return cached  # the token service said no once this run; asking again won't change it
            if cached is not None and not fresh and cached[1] > time.monotonic():
                return cached[0]
            query = {"scope": key[3]}
            if service:
                query["service"] = service
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
            headers = {}
            if credential is not None and not realm_may_receive_credentials(realm):
                log.warning("registry.realm_not_https", registry=ref.registry, realm=safe_url(realm))
            elif credential is not None:
                pair = f"{credential.username}:{credential.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            try:
                response = self._request("GET", url, headers, kind="token", max_bytes=_SMALL_BODY)
            except HttpError as exc:
                return _Denied(
                    ImageStatus.UNREACHABLE,
                    f"the token service of {ref.registry} at {safe_url(realm)} is unreachable ({exc})",
                )
            if response.status in (401, 403):
                denied = _Denied(ImageStatus.UNAUTHORIZED, self._denied_message(ref, response.status))
                with self._lock:
                    self._tokens[key] = denied
                return denied
            if response.status != 200:
                return _Denied(
                    ImageStatus.UNAUTHORIZED,
                    f"the token service of {ref.registry} answered {response.status} for {ref.repository}",
                )
            try:
                data = json.loads(response.body)
                token = data.get("token") or data.get("access_token")
                expires_in = float(data.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                token = None
            if not isinstance(token, str) or not token:
                return _Denied(ImageStatus.UNAUTHORIZED, f"the token service of {ref.registry} returned no token")
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
            url = self._url(registry, "/v2/")
            try:
                response = self._request("GET", url, {}, kind="ping", max_bytes=_SMALL_BODY)
            except HttpError as exc:
                state.unreachable = str(exc)
            else:
                if response.status == 401 and answered_by_registry(response.url, url):
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

    # -- HTTP (deployctl.edges.http: total deadline, bounded body, keep-alive, proxies) --

    def _url(self, registry: str, path: str) -> str:
        return api_base_url(registry, insecure_registries=self._insecure) + path

    def _request(
        self, method: str, url: str, headers: dict[str, str], *, kind: str, max_bytes: int = _MANIFEST_BODY
    ) -> Response:
        """One call within the client's total deadline; Authorization never follows a redirect elsewhere."""
        with self._lock:
            self._requests[f"{method} {kind}"] += 1
        return self._http.request(
            method,
            url,
            headers=headers,
            deadline=self._timeout,
            max_bytes=max_bytes,
            max_redirects=_MAX_REDIRECTS,
        )
