"""deployctl.yaml: the schema, its defaults, and errors that name the key path and line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployctl.model.config import (
    AppConfig,
    Config,
    EnvironmentConfig,
    FreezeWindow,
    find_cycle,
    load_config,
)

SHA = "60375125abec57111e2eaeac7081f8f45bdfe28b"

FULL = b"""\
version: 1
apps:
  web:
    image: registry.example.com/shop/web
    tag: "release-{short_sha}"
    container: frontend
    source: ../web
    depends_on: [api]
    pin: tag
  api:
    image: localhost:5000/shop/api
environments:
  staging:
    namespace: shop-staging
    context: dev-cluster
  production:
    namespace: shop
    context: prod-cluster
    requires: [staging]
    approvers: ["@shop/release-managers", "@alice", "bob@example.com"]
    require_approval: true
    freeze:
      - start: 2024-12-20T18:00:00Z
        end: "2024-12-27T06:00:00+01:00"
        reason: Holiday freeze
      - start: 2024-06-07T16:00:00Z
        end: 2024-06-10T06:00:00Z
        reason: No Friday deploys
        weekly: true
"""


def load(text: str | bytes) -> tuple[Config | None, list[str]]:
    data = text.encode() if isinstance(text, str) else text
    config, problems = load_config(data)
    return config, [str(p) for p in problems]


def errors_for(text: str) -> list[str]:
    return load(text)[1]


BASE = (
    "version: 1\napps:\n  web:\n    image: r.example.com/web\nenvironments:\n  staging:\n    namespace: s\n"
)


def test_every_documented_key_is_read() -> None:
    config, problems = load(FULL)
    assert problems == []
    assert config is not None
    assert config.apps["web"] == AppConfig(
        name="web",
        image="registry.example.com/shop/web",
        tag="release-{short_sha}",
        container="frontend",
        source="../web",
        depends_on=("api",),
        pin="tag",
    )
    assert config.apps["api"] == AppConfig(name="api", image="localhost:5000/shop/api")
    prod = config.environments["production"]
    assert prod == EnvironmentConfig(
        name="production",
        namespace="shop",
        context="prod-cluster",
        requires=("staging",),
        approvers=("@shop/release-managers", "@alice", "bob@example.com"),
        require_approval=True,
        freeze=(
            FreezeWindow(
                start=datetime(2024, 12, 20, 18, tzinfo=UTC),
                end=datetime(2024, 12, 27, 5, tzinfo=UTC),
                reason="Holiday freeze",
            ),
            FreezeWindow(
                start=datetime(2024, 6, 7, 16, tzinfo=UTC),
                end=datetime(2024, 6, 10, 6, tzinfo=UTC),
                reason="No Friday deploys",
                weekly=True,
            ),
        ),
    )
    assert config.environments["staging"].context == "dev-cluster"


def test_defaults_container_is_the_app_name_and_tag_is_the_sha() -> None:
    config, problems = load(BASE)
    assert problems == [] and config is not None
    web = config.apps["web"]
    assert (web.container, web.tag, web.pin, web.source, web.depends_on) == (
        "web",
        "{sha}",
        "digest",
        None,
        (),
    )
    assert web.image_ref(SHA) == f"r.example.com/web:{SHA}"


def test_image_ref_fills_in_short_sha() -> None:
    app = AppConfig(name="web", image="r/web", tag="v-{short_sha}-{sha}")
    assert app.image_ref(SHA) == f"r/web:v-{SHA[:12]}-{SHA}"


def test_project_example_config_is_valid() -> None:
    data = (Path(__file__).resolve().parents[2] / "deployctl.yaml").read_bytes()
    config, problems = load_config(data)
    assert problems == [] and config is not None
    assert config.environments["production"].requires == ("staging",)
    assert config.apps["web"].depends_on == ("api",)


def test_unknown_key_is_an_error_naming_the_key_path_and_line() -> None:
    assert errors_for(BASE + "    namspace: typo\n") == [
        "deployctl.yaml:8: unknown key 'environments.staging.namspace'; allowed here: namespace, context, "
        "requires, approvers, require_approval, min_approvals, freeze, require_verified, on_verification_failure"
    ]


def test_unknown_top_level_key_is_an_error() -> None:
    assert errors_for(BASE + "extra: 1\n") == [
        "deployctl.yaml:8: unknown key 'extra'; allowed here: version, apps, environments"
    ]


def test_missing_version_is_an_error() -> None:
    assert "missing 'version: 1'" in errors_for(BASE.replace("version: 1\n", ""))[0]


def test_other_version_is_not_supported() -> None:
    assert errors_for(BASE.replace("version: 1", "version: 2")) == [
        "deployctl.yaml:1: version '2' is not supported; this deployctl reads version 1"
    ]


def test_depends_on_unknown_app_is_an_error_on_its_line() -> None:
    text = BASE.replace(
        "    image: r.example.com/web\n", "    image: r.example.com/web\n    depends_on: [db]\n"
    )
    config, problems = load(text)
    assert problems == [
        "deployctl.yaml:5: apps.web.depends_on names unknown app 'db'; add it under apps or remove it"
    ]
    assert config is not None and "web" in config.invalid_apps and "web" not in config.apps


def test_a_nul_byte_in_source_is_an_error_on_its_line_and_the_app_is_not_deployable() -> None:
    text = BASE.replace(
        "    image: r.example.com/web\n", '    image: r.example.com/web\n    source: "../api\\0"\n'
    )
    config, problems = load(text)
    assert problems == [
        "deployctl.yaml:5: apps.web.source '../api\\x00' contains a control character; write a path or a URL"
    ]
    assert config is not None and "web" in config.invalid_apps and "web" not in config.apps


def test_depends_on_cycle_is_an_error_showing_the_cycle() -> None:
    text = (
        "version: 1\napps:\n"
        "  a: {image: r/a, depends_on: [b]}\n"
        "  b: {image: r/b, depends_on: [c]}\n"
        "  c: {image: r/c, depends_on: [a]}\n"
        "  d: {image: r/d, depends_on: [a]}\n"
        "environments: {}\n"
    )
    config, problems = load(text)
    assert problems == [
        "deployctl.yaml:3: depends_on cycle: a -> b -> c -> a; remove one of these dependencies"
    ]
    assert config is not None and config.invalid_apps == {"a", "b", "c"} and set(config.apps) == {"d"}


def test_self_dependency_is_an_error() -> None:
    assert (
        "depends on itself"
        in errors_for("version: 1\napps:\n  a: {image: r/a, depends_on: [a]}\nenvironments: {}\n")[0]
    )


def test_requires_unknown_environment_is_an_error() -> None:
    assert errors_for(BASE + "    requires: [qa]\n") == [
        "deployctl.yaml:8: environments.staging.requires names unknown environment 'qa'; "
        "add it under environments or remove it"
    ]


def test_requires_cycle_is_an_error() -> None:
    text = (
        "version: 1\napps: {}\nenvironments:\n"
        "  a: {namespace: a, requires: [b]}\n  b: {namespace: b, requires: [a]}\n"
    )
    assert "requires cycle: a -> b -> a" in errors_for(text)[0]


@pytest.mark.parametrize(
    ("namespace", "why"),
    [
        ("Shop", "has uppercase letters"),
        ("shop_prod", "may only contain"),
        ("-shop", "may only contain"),
        ("a" * 64, "is 64 characters long"),
        ("shop.prod", "may only contain"),
    ],
)
def test_namespace_must_be_a_dns_label(namespace: str, why: str) -> None:
    problems = errors_for(BASE.replace("namespace: s", f"namespace: {namespace}"))
    assert len(problems) == 1 and problems[0].startswith("deployctl.yaml:7: environments.staging.namespace")
    assert why in problems[0]


@pytest.mark.parametrize("name", ["Web", "web_app", "web.app", "-web", "x" * 64, "wéb"])
def test_app_names_must_be_dns_labels(name: str) -> None:
    problems = errors_for(BASE.replace("  web:\n", f"  {name}:\n"))
    assert len(problems) == 1 and "must be a Kubernetes DNS-1123 label" in problems[0]


def test_yaml_11_booleans_as_names_stay_names() -> None:
    config, problems = load("version: 1\napps:\n  no: {image: r/no}\nenvironments:\n  on: {namespace: on}\n")
    assert problems == [] and config is not None
    assert set(config.apps) == {"no"} and config.environments["on"].namespace == "on"


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("r.example.com/web:latest", "has a tag or digest"),
        ("r.example.com/web@sha256:" + "a" * 64, "has a tag or digest"),
        ("R.example.com/Web", "is not a valid image repository"),
        ("web image", "is not a valid image repository"),
    ],
)
def test_image_must_be_a_repository_without_tag(image: str, message: str) -> None:
    problems = errors_for(BASE.replace("image: r.example.com/web", f"image: '{image}'"))
    assert len(problems) == 1 and message in problems[0] and problems[0].startswith("deployctl.yaml:4:")


def test_tag_template_must_contain_the_sha() -> None:
    problems = errors_for(
        BASE.replace("image: r.example.com/web\n", "image: r.example.com/web\n    tag: latest\n")
    )
    assert problems == ["deployctl.yaml:5: apps.web.tag 'latest' must contain {sha} or {short_sha}"]


def test_tag_template_must_make_a_valid_tag() -> None:
    problems = errors_for(
        BASE.replace("image: r.example.com/web\n", "image: r.example.com/web\n    tag: 'v/{sha}'\n")
    )
    assert len(problems) == 1 and "does not make a valid image tag" in problems[0]


def test_pin_must_be_digest_or_tag() -> None:
    problems = errors_for(
        BASE.replace("image: r.example.com/web\n", "image: r.example.com/web\n    pin: latest\n")
    )
    assert problems == ["deployctl.yaml:5: apps.web.pin 'latest' must be 'digest' or 'tag'"]


def test_missing_image_and_namespace_are_errors() -> None:
    problems = errors_for("version: 1\napps:\n  web: {tag: '{sha}'}\nenvironments:\n  s: {context: c}\n")
    assert problems == [
        "deployctl.yaml:3: apps.web.image is missing; give the image repository, "
        "e.g. registry.example.com/web",
        "deployctl.yaml:5: environments.s.namespace is missing; give the Kubernetes namespace to deploy into",
    ]


def test_require_approval_needs_approvers() -> None:
    assert "approvers is empty" in errors_for(BASE + "    require_approval: true\n")[0]


def test_approvers_must_look_like_users_teams_or_emails() -> None:
    assert "is not @user, @org/team" in errors_for(BASE + "    approvers: [release managers]\n")[0]


def test_freeze_time_needs_a_timezone() -> None:
    text = (
        BASE + "    freeze:\n      - {start: '2024-12-20T18:00:00', end: 2024-12-21T00:00:00Z, reason: x}\n"
    )
    assert "is not a time with a timezone" in errors_for(text)[0]


def test_freeze_bare_dates_are_midnight_utc() -> None:
    config, problems = load(
        BASE + "    freeze:\n      - {start: 2024-12-24, end: 2024-12-27, reason: xmas}\n"
    )
    assert problems == [] and config is not None
    window = config.environments["staging"].freeze[0]
    assert window.start == datetime(2024, 12, 24, tzinfo=UTC)


def test_freeze_that_ends_before_it_starts_is_an_error() -> None:
    text = BASE + "    freeze:\n      - {start: 2024-12-27, end: 2024-12-24, reason: x}\n"
    assert "ends before it starts" in errors_for(text)[0]


def test_freeze_needs_a_reason() -> None:
    text = BASE + "    freeze:\n      - {start: 2024-12-24, end: 2024-12-27}\n"
    assert "is missing reason" in errors_for(text)[0]


def test_one_off_freeze_window_is_active_between_start_and_end() -> None:
    start = datetime(2024, 12, 20, 18, tzinfo=UTC)
    window = FreezeWindow(start=start, end=start + timedelta(days=2), reason="x")
    assert not window.active(start - timedelta(seconds=1))
    assert window.active(start) and window.active(start + timedelta(days=1))
    assert not window.active(start + timedelta(days=2))


def test_weekly_freeze_window_repeats_every_seven_days() -> None:
    friday = datetime(2024, 6, 7, 16, tzinfo=UTC)
    window = FreezeWindow(start=friday, end=friday + timedelta(hours=62), reason="weekend", weekly=True)
    assert window.active(friday + timedelta(weeks=3, hours=1))
    assert not window.active(friday + timedelta(weeks=3, days=3))
    env = EnvironmentConfig(name="p", namespace="p", freeze=(window,))
    assert env.frozen_at(friday + timedelta(weeks=1)) == window


def test_duplicate_keys_are_errors() -> None:
    assert errors_for(BASE + "  staging:\n    namespace: t\n") == [
        "deployctl.yaml:8: environments.staging is given twice; keep one"
    ]


def test_wrong_types_are_errors_with_the_key_path() -> None:
    problems = errors_for("version: 1\napps: [web]\nenvironments:\n  s: {namespace: s, requires: staging}\n")
    assert problems == [
        "deployctl.yaml:2: apps must be a mapping (key: value lines)",
        "deployctl.yaml:4: environments.s.requires must be a list, for example [a, b]",
    ]


def test_find_cycle_handles_long_chains_without_recursion() -> None:
    graph = {f"a{i}": (f"a{i + 1}",) for i in range(5000)}
    assert find_cycle(graph) is None
    graph["a4999"] = ("a0",)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 5001


def test_commit_url_and_owner_are_read_and_link_a_commit() -> None:
    config, problems = load_config(
        BASE.replace("image: r.example.com/web\n", "image: r.example.com/web\n"
                     "    commit_url: https://git.example.com/shop/web/-/commit/{sha}\n    owner: '@shop/web-team'\n")
        .encode()
    )
    assert not [p for p in problems if p.is_error] and config is not None
    web = config.apps["web"]
    assert web.owner == "@shop/web-team"
    assert web.commit_link(SHA) == f"https://git.example.com/shop/web/-/commit/{SHA}"
    assert AppConfig(name="api", image="r/api").commit_link(SHA) is None


@pytest.mark.parametrize("url", ["javascript:alert(1)//{sha}", "https://git.example.com/web", "https://x/\"{sha}"])
def test_commit_url_must_be_http_with_a_sha(url: str) -> None:
    problems = errors_for(BASE.replace("image: r.example.com/web\n", f"image: r.example.com/web\n    commit_url: '{url}'\n"))
    assert len(problems) == 1 and "apps.web.commit_url" in problems[0] and "must be an http(s) URL" in problems[0]


def test_pre_deploy_names_a_job_or_cronjob_template() -> None:
    config, problems = load(BASE.replace("image: r.example.com/web\n",
                                         "image: r.example.com/web\n    pre_deploy: cronjob/migrate\n"))
    assert problems == [] and config is not None
    assert config.apps["web"].pre_deploy == "cronjob/migrate"
    problems = errors_for(BASE.replace("image: r.example.com/web\n",
                                       "image: r.example.com/web\n    pre_deploy: deployment/migrate\n"))
    assert problems == ["deployctl.yaml:5: apps.web.pre_deploy 'deployment/migrate' must be job/<name> or "
                        "cronjob/<name> (a Job or suspended CronJob in the app's namespace)"]
