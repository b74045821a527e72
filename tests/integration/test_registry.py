"""The registry edge vs a real distribution registry (Debian's docker-registry), with or without auth."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import structlog

from deployctl.edges.registry.client import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Credential,
    CredentialStore,
    RegistryClient,
    check_retagged,
)
from tests.fixtures.registry import LocalRegistry, RegistryPusher, sha256_digest

pytestmark = pytest.mark.integration

SHA = "6037512594e4c5ab0fe2d2f5ec2d7ec37c4d1a0b"


def _client(registry: LocalRegistry | None = None, *, password: str | None = None) -> RegistryClient:
    if registry is None:
        return RegistryClient(credentials=CredentialStore.anonymous())
    creds = {registry.host: Credential(registry.username, password or registry.password)}
    return RegistryClient(credentials=CredentialStore(static=creds))


@pytest.fixture
def pusher(registry: LocalRegistry) -> Iterator[RegistryPusher]:
    p = RegistryPusher(registry)
    yield p
    p.close()


# --- no auth -----------------------------------------------------------------------------------


def test_present_tag_resolves_to_the_digest_of_its_oci_manifest(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    pushed = pusher.push_image(unique_repo, SHA)
    with _client() as client:
        resolution = client.resolve(f"{registry.host}/{unique_repo}:{SHA}")
    assert resolution.status == "found"
    assert resolution.digest == pushed.digest == sha256_digest(pushed.body)
    assert resolution.media_type == OCI_MANIFEST
    assert resolution.message is None
    assert resolution.pinned() == f"{registry.host}/{unique_repo}:{SHA}@{pushed.digest}"


def test_docker_v2_manifest_resolves_to_its_digest(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    pushed = pusher.push_image(unique_repo, "v2", docker=True)
    with _client() as client:
        resolution = client.resolve(f"{registry.host}/{unique_repo}:v2")
    assert (resolution.status, resolution.digest, resolution.media_type) == (
        "found",
        pushed.digest,
        DOCKER_MANIFEST,
    )


def test_missing_tag_is_missing_with_a_message_asking_about_the_build(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    pusher.push_image(unique_repo, "present")
    reference = f"{registry.host}/{unique_repo}:{SHA}"
    with _client() as client:
        resolution = client.resolve(reference)
        unknown_repo = client.resolve(f"{registry.host}/{unique_repo}-never-pushed:{SHA}")
    assert resolution.status == "missing"
    assert resolution.digest is None
    assert resolution.message == f"no image {registry.host}/{unique_repo}:60375125… — did its build finish?"
    assert unknown_repo.status == "missing"


def test_oci_index_resolves_to_the_digest_of_the_index_itself(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    index = pusher.push_index(unique_repo, "multi")
    with _client() as client:
        resolution = client.resolve(f"{registry.host}/{unique_repo}:multi")
    assert (resolution.status, resolution.digest, resolution.media_type) == ("found", index.digest, OCI_INDEX)


def test_docker_manifest_list_resolves_to_the_digest_of_the_list_itself(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    manifest_list = pusher.push_index(unique_repo, "multi", docker=True)
    with _client() as client:
        resolution = client.resolve(f"{registry.host}/{unique_repo}:multi")
    assert resolution.status == "found"
    assert resolution.digest == manifest_list.digest
    assert resolution.media_type == DOCKER_MANIFEST_LIST


def test_retagged_image_between_staging_and_production_changes_the_digest_and_is_reported(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    reference = f"{registry.host}/{unique_repo}:{SHA}"
    tested = pusher.push_image(unique_repo, SHA, content=b"the build that was tested\n")
    with _client() as staging_run:
        staging = staging_run.resolve(reference)
    assert staging.digest == tested.digest
    assert check_retagged(tested.digest, staging, tested_in="staging") is None

    repushed = pusher.push_image(unique_repo, SHA, content=b"a different build under the same tag\n")
    with _client() as production_run:
        production = production_run.resolve(reference)
    assert production.status == "found"
    assert production.digest == repushed.digest != tested.digest
    message = check_retagged(tested.digest, production, tested_in="staging")
    assert message is not None and "the artifact changed after it was tested" in message


def test_moving_a_tag_to_another_manifest_is_seen_by_a_new_run(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    first = pusher.push_image(unique_repo, "release", annotation="1")
    second = pusher.push_image(unique_repo, "candidate", annotation="2")
    reference = f"{registry.host}/{unique_repo}:release"
    with _client() as before:
        assert before.resolve(reference).digest == first.digest
        assert pusher.retag(unique_repo, "candidate", "release") == second.digest
        assert before.resolve(reference).digest == first.digest, "results are cached for the run"
    with _client() as after:
        assert after.resolve(reference).digest == second.digest


def test_digest_pinned_reference_is_checked_by_digest(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    pushed = pusher.push_image(unique_repo, "v1")
    absent = "sha256:" + "0" * 64
    with _client() as client:
        found = client.resolve(f"{registry.host}/{unique_repo}:v1@{pushed.digest}")
        missing = client.resolve(f"{registry.host}/{unique_repo}@{absent}")
    assert (found.status, found.digest) == ("found", pushed.digest)
    assert missing.status == "missing"


def test_resolve_many_makes_exactly_one_manifest_request_per_distinct_reference(
    registry: LocalRegistry, pusher: RegistryPusher, unique_repo: str
) -> None:
    pushed = {f"t{i}": pusher.push_image(unique_repo, f"t{i}", annotation=str(i)) for i in range(20)}
    references = [f"{registry.host}/{unique_repo}:t{i % 20}" for i in range(60)]
    references += [f"{registry.host}/{unique_repo}:absent{i % 3}" for i in range(9)]
    with RegistryClient(credentials=CredentialStore.anonymous(), concurrency=8) as client:
        results = client.resolve_many(references)
        assert client.requests_made == {"GET ping": 1, "HEAD manifest": 23}
        again = client.resolve_many(references[:5]) | {"one": client.resolve(references[0])}
        assert client.requests_made == {"GET ping": 1, "HEAD manifest": 23}, (
            "a second ask is served from cache"
        )
    assert set(results) == set(references)
    for tag, image in pushed.items():
        assert results[f"{registry.host}/{unique_repo}:{tag}"].digest == image.digest
    assert results[f"{registry.host}/{unique_repo}:absent0"].status == "missing"
    assert again["one"] == results[references[0]]


def test_invalid_reference_is_an_error_resolution_without_a_request() -> None:
    with _client() as client:
        resolution = client.resolve("Shop/Web:1")
        assert client.requests_made == {}
    assert resolution.status == "error"
    assert resolution.message is not None and "must be lowercase" in resolution.message


def test_registry_down_is_unreachable_with_one_attempt_per_host_and_no_traceback(
    unused_registry_host: str,
) -> None:
    references = [f"{unused_registry_host}/shop/web:{i}" for i in range(50)]
    with _client() as client:
        results = client.resolve_many(references)
        assert client.requests_made == {"GET ping": 1}
    assert {r.status for r in results.values()} == {"unreachable"}
    message = results[references[0]].message
    assert message == (
        f"registry {unused_registry_host} is unreachable (connection to {unused_registry_host} refused); "
        f"could not check {unused_registry_host}/shop/web:0"
    )


def test_registry_that_stops_mid_run_is_unreachable(tmp_path: Path) -> None:
    from tests.fixtures.registry import registry_binary, start_registry

    if registry_binary() is None:
        pytest.skip("docker-registry is not installed: apt-get install docker-registry")
    local = start_registry(tmp_path / "reg")
    try:
        pusher = RegistryPusher(local)
        pusher.push_image("shop/web", "v1")
        pusher.close()
        with _client() as client:
            assert client.resolve(f"{local.host}/shop/web:v1").status == "found"
            local.stop()
            stopped = client.resolve(f"{local.host}/shop/web:v2")
    finally:
        local.stop()
    assert stopped.status == "unreachable"
    assert stopped.message is not None and f"registry {local.host} is unreachable" in stopped.message


def test_head_without_digest_header_falls_back_to_get_and_hashes_the_body() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            code = 200 if self.path in ("/v2/", "/v2/shop/web/manifests/v1") else 404
            self.send_response(code)
            self.send_header("Content-Type", OCI_MANIFEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._answer(False)

        def do_GET(self) -> None:
            self._answer(True)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with _client() as client:
            resolution = client.resolve(f"127.0.0.1:{server.server_address[1]}/shop/web:v1")
            requests = client.requests_made
    finally:
        server.shutdown()
        server.server_close()
    assert (resolution.status, resolution.digest) == ("found", sha256_digest(body))
    assert requests == {"GET ping": 1, "HEAD manifest": 1, "GET manifest": 1}


# --- basic auth --------------------------------------------------------------------------------


def test_basic_auth_registry_resolves_with_good_credentials(
    basic_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    pushed = RegistryPusher(basic_auth_registry).push_image(unique_repo, SHA)
    with _client(basic_auth_registry) as client:
        resolution = client.resolve(f"{basic_auth_registry.host}/{unique_repo}:{SHA}")
        assert client.requests_made == {"GET ping": 1, "HEAD manifest": 1}
    assert (resolution.status, resolution.digest) == ("found", pushed.digest)


def test_basic_auth_registry_with_bad_credentials_is_unauthorized_and_never_shows_the_password(
    basic_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    RegistryPusher(basic_auth_registry).push_image(unique_repo, SHA)
    with (
        structlog.testing.capture_logs() as logs,
        _client(basic_auth_registry, password="wrong-pass-123") as client,
    ):
        resolution = client.resolve(f"{basic_auth_registry.host}/{unique_repo}:{SHA}")
        assert client.requests_made == {"GET ping": 1, "HEAD manifest": 1}
    assert resolution.status == "unauthorized"
    assert resolution.message == (
        f"registry {basic_auth_registry.host} rejected the credentials for deployer from explicit "
        f"(or {unique_repo} does not exist)"
    )
    assert "wrong-pass-123" not in repr(resolution) + repr(logs)


def test_basic_auth_registry_without_credentials_says_how_to_provide_them(
    basic_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    with _client() as client:
        resolution = client.resolve(f"{basic_auth_registry.host}/{unique_repo}:{SHA}")
    assert resolution.status == "unauthorized"
    assert resolution.message is not None
    assert f"docker login {basic_auth_registry.host}" in resolution.message
    assert "DEPLOYCTL_REGISTRY_127_0_0_1_" in resolution.message


def test_credentials_from_per_host_environment_variables(
    basic_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    from deployctl.edges.registry.credentials import env_host_key

    pushed = RegistryPusher(basic_auth_registry).push_image(unique_repo, "v1")
    prefix = f"DEPLOYCTL_REGISTRY_{env_host_key(basic_auth_registry.host)}_"
    env = {
        prefix + "USERNAME": basic_auth_registry.username,
        prefix + "PASSWORD": basic_auth_registry.password,
    }
    store = CredentialStore.from_environment(env, docker_config_path=Path("/nonexistent/config.json"))
    with RegistryClient(credentials=store) as client:
        assert client.resolve(f"{basic_auth_registry.host}/{unique_repo}:v1").digest == pushed.digest


def test_credentials_from_docker_config_auths(
    basic_auth_registry: LocalRegistry, unique_repo: str, tmp_path: Path
) -> None:
    pushed = RegistryPusher(basic_auth_registry).push_image(unique_repo, "v1")
    pair = f"{basic_auth_registry.username}:{basic_auth_registry.password}".encode()
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"auths": {f"http://{basic_auth_registry.host}": {"auth": base64.b64encode(pair).decode()}}}
        )
    )
    store = CredentialStore.from_environment({"DOCKER_CONFIG": str(tmp_path)})
    with RegistryClient(credentials=store) as client:
        assert client.resolve(f"{basic_auth_registry.host}/{unique_repo}:v1").digest == pushed.digest


def test_credentials_from_a_docker_credential_helper(
    basic_auth_registry: LocalRegistry, unique_repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pushed = RegistryPusher(basic_auth_registry).push_image(unique_repo, "v1")
    helper = tmp_path / "bin" / "docker-credential-deployctltest"
    helper.parent.mkdir()
    answer = json.dumps(
        {"ServerURL": basic_auth_registry.host, "Username": basic_auth_registry.username,
         "Secret": basic_auth_registry.password}
    )  # fmt: skip
    helper.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\necho '{answer}'\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(
        json.dumps({"credHelpers": {basic_auth_registry.host: "deployctltest"}})
    )
    store = CredentialStore.from_environment({"DOCKER_CONFIG": str(tmp_path)})
    with RegistryClient(credentials=store) as client:
        assert client.resolve(f"{basic_auth_registry.host}/{unique_repo}:v1").digest == pushed.digest


# --- token auth --------------------------------------------------------------------------------


def test_token_auth_registry_resolves_via_the_bearer_challenge_with_one_token_per_repository(
    token_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    pusher = RegistryPusher(token_auth_registry)
    pushed = [pusher.push_image(unique_repo, f"t{i}", annotation=str(i)) for i in range(5)]
    index = pusher.push_index(unique_repo, "multi")
    references = [f"{token_auth_registry.host}/{unique_repo}:t{i}" for i in range(5)]
    references.append(f"{token_auth_registry.host}/{unique_repo}:multi")
    with _client(token_auth_registry) as client:
        results = client.resolve_many(references)
        assert client.requests_made == {"GET ping": 1, "GET token": 1, "HEAD manifest": 6}
    assert [results[r].digest for r in references] == [p.digest for p in pushed] + [index.digest]


def test_token_auth_registry_with_bad_credentials_is_unauthorized(
    token_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    RegistryPusher(token_auth_registry).push_image(unique_repo, "v1")
    references = [f"{token_auth_registry.host}/{unique_repo}:v{i}" for i in range(4)]
    with (
        structlog.testing.capture_logs() as logs,
        _client(token_auth_registry, password="wrong-pass-456") as client,
    ):
        results = client.resolve_many(references)
        assert client.requests_made == {"GET ping": 1, "GET token": 1}, (
            "a refused token is not asked for again"
        )
    assert {r.status for r in results.values()} == {"unauthorized"}
    assert "rejected the credentials for deployer" in (results[references[0]].message or "")
    assert "wrong-pass-456" not in repr(results) + repr(logs)


def test_token_auth_registry_without_credentials_is_unauthorized(
    token_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    with _client() as client:
        resolution = client.resolve(f"{token_auth_registry.host}/{unique_repo}:v1")
    assert resolution.status == "unauthorized"
    assert f"docker login {token_auth_registry.host}" in (resolution.message or "")


def test_token_auth_registry_reports_missing_tags_as_missing(
    token_auth_registry: LocalRegistry, unique_repo: str
) -> None:
    RegistryPusher(token_auth_registry).push_image(unique_repo, "v1")
    with _client(token_auth_registry) as client:
        resolution = client.resolve(f"{token_auth_registry.host}/{unique_repo}:{SHA}")
    assert resolution.status == "missing"
    assert (
        resolution.message
        == f"no image {token_auth_registry.host}/{unique_repo}:60375125… — did its build finish?"
    )
