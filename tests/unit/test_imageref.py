"""Image references: parsing, Docker Hub defaults, formatting and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployctl.errors import InvalidInputError
from deployctl.model.imageref import ImageRef, InvalidImageRefError, parse_image_ref, short_digest

DIGEST = "sha256:" + "ab" * 32
SHA = "6037512594e4c5ab0fe2d2f5ec2d7ec37c4d1a0b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", ImageRef("docker.io", "library/nginx", None, None)),
        ("nginx:1.25", ImageRef("docker.io", "library/nginx", "1.25", None)),
        ("shop/web:v1", ImageRef("docker.io", "shop/web", "v1", None)),
        ("index.docker.io/library/nginx:1", ImageRef("docker.io", "library/nginx", "1", None)),
        ("docker.io/nginx", ImageRef("docker.io", "library/nginx", None, None)),
        (
            f"registry.example.com:5000/shop/web:{SHA}@{DIGEST}",
            ImageRef("registry.example.com:5000", "shop/web", SHA, DIGEST),
        ),
        ("registry.example.com/shop/web", ImageRef("registry.example.com", "shop/web", None, None)),
        ("localhost/web:latest", ImageRef("localhost", "web", "latest", None)),
        ("localhost:5000/a/b/c:t", ImageRef("localhost:5000", "a/b/c", "t", None)),
        ("127.0.0.1:5000/shop/web:1", ImageRef("127.0.0.1:5000", "shop/web", "1", None)),
        ("[::1]:5000/shop/web:1", ImageRef("[::1]:5000", "shop/web", "1", None)),
        (f"ghcr.io/org/app@{DIGEST}", ImageRef("ghcr.io", "org/app", None, DIGEST)),
        ("Registry.Example.com/shop/web", ImageRef("registry.example.com", "shop/web", None, None)),
        ("a/b.c__d-e---f:T_a.g-1", ImageRef("docker.io", "a/b.c__d-e---f", "T_a.g-1", None)),
    ],
)
def test_reference_is_parsed_into_registry_repository_tag_and_digest(text: str, expected: ImageRef) -> None:
    assert parse_image_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty image reference"),
        (" nginx", "whitespace"),
        ("Nginx", "must be lowercase"),
        ("registry.example.com/Shop/web", "must be lowercase"),
        ("shop//web", "empty path component"),
        ("shop/web/", "empty path component"),
        ("shop/web:", "invalid tag ''"),
        ("shop/web:-x", "invalid tag '-x'"),
        ("shop/web:" + "a" * 129, "invalid tag"),
        ("shop/web@sha256:abc", "invalid digest"),
        ("shop/web@sha256:" + "A" * 64, "64 lowercase hex digits"),
        ("shop/web@sha256:" + "a" * 63 + "g", "64 lowercase hex digits"),
        ("bad_host.example.com/shop/web", "invalid registry host"),
        ("registry.example.com:port/shop/web", "invalid registry host"),
        ("shop/-web", "not a valid path component"),
        ("example.com/" + "a" * 250, "longer than 255"),
    ],
)
def test_invalid_reference_is_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidImageRefError, match=message) as caught:
        parse_image_ref(text)
    assert isinstance(caught.value, InvalidInputError)
    assert caught.value.exit_code == 2


def test_str_is_fully_qualified_and_familiar_is_what_a_person_writes() -> None:
    ref = parse_image_ref("nginx:1.25")
    assert str(ref) == "docker.io/library/nginx:1.25"
    assert ref.familiar() == "nginx:1.25"
    assert parse_image_ref("shop/web").familiar() == "shop/web"
    assert parse_image_ref("library/a/b:1").familiar() == "library/a/b:1"
    assert parse_image_ref("registry.example.com/shop/web:1").familiar() == "registry.example.com/shop/web:1"


def test_with_digest_pins_and_keeps_the_tag() -> None:
    ref = parse_image_ref(f"registry.example.com/shop/web:{SHA}")
    pinned = ref.with_digest(DIGEST)
    assert str(pinned) == f"registry.example.com/shop/web:{SHA}@{DIGEST}"
    assert pinned.manifest_reference == DIGEST
    assert ref.manifest_reference == SHA
    assert parse_image_ref("nginx").manifest_reference == "latest"
    with pytest.raises(InvalidImageRefError, match="invalid digest"):
        ref.with_digest("sha256:short")


def test_display_shortens_commit_sha_tags_and_digests_for_messages() -> None:
    ref = parse_image_ref(f"registry.example.com/shop/web:{SHA}")
    assert ref.display() == "registry.example.com/shop/web:60375125…"
    assert ref.with_digest(DIGEST).display() == "registry.example.com/shop/web:60375125…@sha256:abababababab…"
    assert parse_image_ref("nginx:1.25").display() == "nginx:1.25"
    assert short_digest("sha256:abc") == "sha256:abc"


# No '.' in generated components: a first component with a '.' is a registry host, by the grammar.
_component = st.from_regex(r"[a-z0-9]{1,5}(?:(?:_|__|-+)[a-z0-9]{1,5}){0,2}", fullmatch=True)
_registry = st.one_of(
    st.none(),
    st.sampled_from(["registry.example.com", "localhost:5000", "127.0.0.1:5000", "ghcr.io", "[::1]:80"]),
)
_tag = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
_digest = st.one_of(st.none(), st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True))


@given(
    registry=_registry,
    path=st.lists(_component, min_size=1, max_size=3),
    tag=_tag,
    digest=_digest,
)
def test_formatting_a_parsed_reference_parses_back_to_the_same_value(
    registry: str | None, path: list[str], tag: str | None, digest: str | None
) -> None:
    text = "/".join(([registry] if registry else []) + path)
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    ref = parse_image_ref(text)
    assert ref.tag == tag
    assert ref.digest == digest
    assert parse_image_ref(str(ref)) == ref
    assert parse_image_ref(ref.familiar()) == ref
