"""Registry auth, credentials and messages: the pure parts of the registry edge."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from deployctl.edges.registry.auth import Challenge, parse_www_authenticate, pick_challenge
from deployctl.edges.registry.credentials import (
    Credential,
    CredentialStore,
    DockerConfig,
    RegistryConfigError,
    decode_docker_auth,
    env_credential,
    env_host_key,
    normalize_registry_host,
    parse_docker_config,
    parse_helper_output,
)
from deployctl.edges.registry.manifest import Resolution, check_retagged
from deployctl.edges.registry.transport import api_base_url
from deployctl.errors import InvalidInputError

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64
SHA = "6037512594e4c5ab0fe2d2f5ec2d7ec37c4d1a0b"


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# --- WWW-Authenticate --------------------------------------------------------------------------


def test_bearer_challenge_gives_realm_service_and_scope() -> None:
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:shop/web:pull,push"'
    )
    [challenge] = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example.com/token"
    assert challenge.service == "registry.example.com"
    assert challenge.scope == "repository:shop/web:pull,push"


def test_basic_challenge_and_case_insensitive_scheme_and_names() -> None:
    assert parse_www_authenticate('BASIC Realm="my registry"') == [
        Challenge("basic", {"realm": "my registry"})
    ]


def test_several_challenges_in_one_header_are_all_parsed_and_bearer_is_preferred() -> None:
    challenges = parse_www_authenticate('Basic realm="r1", Bearer realm="https://t/token",service=s')
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].params == {"realm": "https://t/token", "service": "s"}
    picked = pick_challenge(challenges)
    assert picked is not None and picked.scheme == "bearer"


def test_quoted_strings_keep_commas_and_unescape_backslashes() -> None:
    [challenge] = parse_www_authenticate(r'Bearer realm="a\"b,c", error="insufficient_scope"')
    assert challenge.params == {"realm": 'a"b,c', "error": "insufficient_scope"}


def test_token68_and_empty_headers_do_not_crash() -> None:
    assert parse_www_authenticate("Negotiate abc123==") == [Challenge("negotiate", {})]
    assert parse_www_authenticate("") == []
    assert pick_challenge(parse_www_authenticate("Negotiate")) is None


# --- docker config -----------------------------------------------------------------------------


def test_docker_config_auths_are_decoded_and_keyed_by_normalised_host() -> None:
    config = parse_docker_config(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _auth("hubuser", "hubpass")},
                "registry.example.com:5000": {"auth": _auth("ci", "p:with:colons")},
                "https://Ghcr.io": {"username": "u", "password": "p"},
                "quay.io": {},
            },
            "credHelpers": {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"},
            "credsStore": "desktop",
        },
        source="/home/me/.docker/config.json",
    )
    assert config.auths["docker.io"].username == "hubuser"
    assert config.auths["registry.example.com:5000"].password == "p:with:colons"
    assert config.auths["ghcr.io"] == Credential("u", "p", "/home/me/.docker/config.json")
    assert "quay.io" not in config.auths
    assert config.cred_helpers == {"123.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"}
    assert config.creds_store == "desktop"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({"auths": []}, "'auths' must be an object"),
        ({"auths": {"r": "x"}}, r"auths\['r'\] must be an object"),
        ({"auths": {"r": {"auth": "not base64!"}}}, "not base64"),
        (
            {"auths": {"r": {"auth": base64.b64encode(b"nocolon").decode()}}},
            "does not decode to 'user:password'",
        ),
        ({"credHelpers": {"r": 1}}, "'credHelpers' must be"),
        ({"credsStore": 5}, "'credsStore' must be"),
    ],
)
def test_malformed_docker_config_is_an_input_error_naming_the_file(data: object, message: str) -> None:
    with pytest.raises(RegistryConfigError, match=message) as caught:
        parse_docker_config(data, source="/home/me/.docker/config.json")
    assert isinstance(caught.value, InvalidInputError)
    assert "/home/me/.docker/config.json" in str(caught.value)


def test_decoded_auth_never_shows_the_password_in_repr() -> None:
    credential = decode_docker_auth(_auth("ci", "hunter2"))
    assert credential.password == "hunter2"
    assert "hunter2" not in repr(credential)


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("https://Registry.Example.com:5000/v2/", "registry.example.com:5000"),
        ("localhost:5000", "localhost:5000"),
    ],
)
def test_registry_hosts_are_normalised(key: str, host: str) -> None:
    assert normalize_registry_host(key) == host


def test_credential_helper_output_is_parsed_and_identity_tokens_are_skipped() -> None:
    out = json.dumps({"ServerURL": "r", "Username": "u", "Secret": "s"})
    assert parse_helper_output(out, helper="pass") == Credential("u", "s", "docker-credential-pass")
    assert parse_helper_output(json.dumps({"Username": "<token>", "Secret": "t"}), helper="x") is None
    assert parse_helper_output("credentials not found", helper="x") is None


# --- environment -------------------------------------------------------------------------------


def test_env_host_key_makes_a_variable_name_from_a_host() -> None:
    assert env_host_key("registry.example.com:5000") == "REGISTRY_EXAMPLE_COM_5000"
    assert env_host_key("docker.io") == "DOCKER_IO"


def test_env_credentials_per_host_and_global() -> None:
    env = {
        "DEPLOYCTL_REGISTRY_USERNAME": "global",
        "DEPLOYCTL_REGISTRY_PASSWORD": "gp",
        "DEPLOYCTL_REGISTRY_REGISTRY_EXAMPLE_COM_USERNAME": "ci",
        "DEPLOYCTL_REGISTRY_REGISTRY_EXAMPLE_COM_PASSWORD": "cp",
    }
    assert env_credential(env, "registry.example.com") == Credential(
        "ci", "cp", "DEPLOYCTL_REGISTRY_REGISTRY_EXAMPLE_COM_USERNAME/PASSWORD"
    )
    assert env_credential(env, "ghcr.io") is None
    assert env_credential(env, None) == Credential("global", "gp", "DEPLOYCTL_REGISTRY_USERNAME/PASSWORD")


def test_half_set_env_credentials_are_an_error_naming_both_variables() -> None:
    with pytest.raises(
        RegistryConfigError, match="DEPLOYCTL_REGISTRY_USERNAME and DEPLOYCTL_REGISTRY_PASSWORD"
    ):
        env_credential({"DEPLOYCTL_REGISTRY_USERNAME": "x"}, None)


def test_credential_store_order_host_env_then_helpers_then_auths_then_global_env() -> None:
    calls: list[tuple[str, str]] = []

    def helper(name: str, server: str) -> Credential | None:
        calls.append((name, server))
        return Credential("from-helper", "x", f"docker-credential-{name}") if name == "ecr" else None

    store = CredentialStore(
        env={
            "DEPLOYCTL_REGISTRY_PINNED_IO_USERNAME": "from-env",
            "DEPLOYCTL_REGISTRY_PINNED_IO_PASSWORD": "x",
            "DEPLOYCTL_REGISTRY_USERNAME": "global",
            "DEPLOYCTL_REGISTRY_PASSWORD": "x",
            "DEPLOYCTL_REGISTRY_HOST": "bound.io",
        },
        docker_config=DockerConfig(
            auths={
                "pinned.io": Credential("from-auths", "x"),
                "plain.io": Credential("from-auths", "x"),
                "docker.io": Credential("hub", "x"),
            },
            cred_helpers={"ecr.io": "ecr"},
            creds_store="desktop",
        ),
        helper_runner=helper,
    )

    def user(host: str) -> str | None:
        found = store.lookup(host)
        return found.username if found else None

    assert user("pinned.io") == "from-env"
    assert user("ecr.io") == "from-helper"
    assert user("plain.io") == "from-auths"
    assert user("docker.io") == "hub"
    assert user("bound.io") == "global"
    assert user("elsewhere.io") is None, "the global pair goes only to DEPLOYCTL_REGISTRY_HOST"
    assert ("desktop", "https://index.docker.io/v1/") in calls
    store.lookup("ecr.io")
    assert calls.count(("ecr", "ecr.io")) == 1, "helper answers are cached"


def test_global_env_credentials_without_a_host_are_an_error_naming_the_host_variable() -> None:
    env = {"DEPLOYCTL_REGISTRY_USERNAME": "ci", "DEPLOYCTL_REGISTRY_PASSWORD": "hunter2"}
    with pytest.raises(RegistryConfigError, match="DEPLOYCTL_REGISTRY_HOST is not") as caught:
        CredentialStore(env=env)
    assert "hunter2" not in str(caught.value)


def test_auth_files_are_asked_in_order_and_only_for_the_host_they_key(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(
        json.dumps(
            {"auths": {"a.io": {"auth": _auth("podman-a", "p")}, "b.io": {"auth": _auth("podman-b", "p")}}}
        )
    )
    (tmp_path / "explicit.json").write_text(json.dumps({"auths": {"a.io": {"auth": _auth("explicit", "p")}}}))
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"c.io": {"auth": _auth("docker-c", "p")}}}))
    store = CredentialStore.from_environment(
        {
            "REGISTRY_AUTH_FILE": str(tmp_path / "explicit.json"),
            "XDG_RUNTIME_DIR": str(runtime),
            "DOCKER_CONFIG": str(tmp_path),
        }
    )

    def user(host: str) -> str | None:
        found = store.lookup(host)
        return found.username if found else None

    assert [user(h) for h in ("a.io", "b.io", "c.io", "d.io")] == ["explicit", "podman-b", "docker-c", None]


def test_anonymous_store_has_no_credentials() -> None:
    assert CredentialStore.anonymous().lookup("registry.example.com") is None


def test_from_environment_reads_docker_config_dir(tmp_path: Path) -> None:
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {"r.io": {"auth": _auth("u", "p")}}}))
    store = CredentialStore.from_environment({"DOCKER_CONFIG": str(config_dir)})
    assert store.lookup("r.io") == Credential("u", "p", str(config_dir / "config.json"))
    (config_dir / "config.json").write_text("{not json")
    with pytest.raises(RegistryConfigError, match=r"config.json:1: not valid JSON"):
        CredentialStore.from_environment({"DOCKER_CONFIG": str(config_dir)})


# --- where to connect --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "insecure", "url"),
    [
        ("127.0.0.1:5000", (), "http://127.0.0.1:5000"),
        ("localhost:5000", (), "http://localhost:5000"),
        ("[::1]:5000", (), "http://[::1]:5000"),
        ("registry.example.com", (), "https://registry.example.com"),
        ("registry.internal:5000", ("registry.internal:5000",), "http://registry.internal:5000"),
        ("registry.internal:5000", ("registry.internal",), "http://registry.internal:5000"),
        ("docker.io", (), "https://registry-1.docker.io"),
    ],
)
def test_plain_http_only_for_loopback_and_listed_insecure_registries(
    registry: str, insecure: tuple[str, ...], url: str
) -> None:
    assert api_base_url(registry, insecure_registries=insecure) == url


# --- retag check and pinning -------------------------------------------------------------------


def test_check_retagged_names_both_digests_and_the_way_out() -> None:
    moved = Resolution(f"registry.example.com/shop/web:{SHA}", "found", NEW, "application/x")
    message = check_retagged(OLD, moved, tested_in="staging")
    assert message is not None
    assert "registry.example.com/shop/web:60375125…" in message
    assert "sha256:bbbbbbbbbbbb…" in message and "sha256:aaaaaaaaaaaa…" in message
    assert "ran in staging" in message
    assert "the artifact changed after it was tested" in message
    assert "--allow-retagged" in message


def test_check_retagged_is_silent_when_digest_matches_or_nothing_was_found() -> None:
    assert check_retagged(OLD, Resolution("shop/web:1", "found", OLD, "x")) is None
    assert check_retagged(OLD, Resolution("shop/web:1", "missing", message="no image")) is None


def test_pinned_reference_keeps_the_written_form_and_adds_the_digest() -> None:
    assert Resolution(f"shop/web:{SHA}", "found", OLD).pinned() == f"shop/web:{SHA}@{OLD}"
    with pytest.raises(ValueError, match="not resolved"):
        Resolution("shop/web:1", "missing").pinned()
