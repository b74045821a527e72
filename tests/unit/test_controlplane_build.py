"""The generated build module replaces every k8s.io staging module of the release."""

from deployctl.devtools.localcluster import build, pins

GOMOD = """module k8s.io/kubernetes

require (
\tgo.etcd.io/etcd/server/v3 v3.6.5 // indirect
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
\tk8s.io/streaming v0.0.0 // indirect
\tk8s.io/utils v0.0.0-20251002143259-bc988d571ff4
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
)
"""


def test_every_v0_0_0_staging_module_is_replaced_at_the_matching_staging_version():
    assert build.staging_replaces(GOMOD, "v1.35.4") == [
        ("k8s.io/api", "v0.35.4"),
        ("k8s.io/client-go", "v0.35.4"),
        ("k8s.io/streaming", "v0.35.4"),
    ]


def test_etcd_version_is_read_from_the_kubernetes_go_mod():
    assert build.etcd_version(GOMOD) == "v3.6.5"


def test_generated_gomod_requires_the_pinned_release():
    text = build.generated_gomod(GOMOD)
    assert f"require k8s.io/kubernetes {pins.KUBERNETES}" in text
    assert "replace k8s.io/utils" not in text


def test_cache_key_changes_with_the_pins(monkeypatch):
    before = pins.cache_key()
    monkeypatch.setattr(pins, "KWOK", "v0.0.1")
    assert pins.cache_key() != before
