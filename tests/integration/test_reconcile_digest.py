"""Digest pinning against a real registry and the real control plane."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployctl.app.run import run_reconcile
from deployctl.edges.audit import url as audit_location
from deployctl.model.audit_target import AUDIT_OFF, AuditTarget
from deployctl.reconcile.options import Overrides, ReconcileOptions, Selection, Timing
from deployctl.reconcile.outcome import ReconcileResult
from tests.fixtures.registry import RegistryPusher

pytestmark = pytest.mark.integration


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def config(image: str, envs: dict[str, str], *, requires: bool = False) -> str:
    lines = ["version: 1", "apps:", "  api:", f"    image: {image}", "environments:"]
    for i, (env, ns) in enumerate(envs.items()):
        lines += [f"  {env}:", f"    namespace: {ns}"]
        if requires and i > 0:
            lines.append(f"    requires: [{list(envs)[0]}]")
    return "\n".join(lines) + "\n"


@pytest.fixture
def pusher(registry):
    p = RegistryPusher(registry)
    yield p
    p.close()


def deploy_repo(cluster, make_repo, image: str, envs: dict[str, str], commit: str, *, requires: bool = False):
    """An ``api`` deployment in each of ``envs``' namespaces and a deploy repo sending ``commit`` to staging."""
    for ns in envs.values():
        cluster.deployment(ns, "api")
    repo = make_repo()
    repo.commit({"deployctl.yaml": config(image, envs, requires=requires),
                 "environments/staging/api.deploy": f"{commit}\n"})
    return repo


def reconcile(repo, cluster, audit: AuditTarget = AUDIT_OFF, options: ReconcileOptions | None = None) -> ReconcileResult:
    """One run of the repo's HEAD against the cluster."""
    return run_reconcile(repo=str(repo.path), ref="HEAD", kubeconfig=cluster.kubeconfig, audit=audit, options=options)


def test_reconcile_applies_the_image_pinned_by_digest_and_records_it(
    cluster, namespace, make_repo, registry, pusher, unique_repo, tmp_path
):
    commit = sha("api-digest")
    pushed = pusher.push_image(unique_repo, commit, annotation="one")
    image = f"{registry.host}/{unique_repo}"
    repo = deploy_repo(cluster, make_repo, image, {"staging": namespace}, commit)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    result = reconcile(repo, cluster, AuditTarget(url), ReconcileOptions(timing=Timing(timeout=60)))
    assert result.exit_code == 0, result.outcomes
    d = cluster.read_deployment(namespace, "api")
    assert d.spec.template.spec.containers[0].image == f"{image}:{commit}@{pushed.digest}"
    assert d.metadata.annotations["deployctl.dev/digest"] == pushed.digest
    store = audit_location.open_store(url)
    try:
        (record,) = store.query(app="api")
        assert record.digest == pushed.digest and record.result == "succeeded"
    finally:
        store.close()
    again = reconcile(repo, cluster)
    assert {o.result for o in again.outcomes} == {"in-sync"}
    assert again.writes() == 0


def test_missing_image_is_refused_naming_the_deploy_file_and_nothing_is_applied(
    cluster, namespace, make_repo, registry, unique_repo
):
    commit = sha("never-built")
    repo = deploy_repo(cluster, make_repo, f"{registry.host}/{unique_repo}", {"staging": namespace}, commit)
    result = reconcile(repo, cluster)
    (outcome,) = result.outcomes
    assert outcome.result == "refused"
    assert outcome.message.startswith("environments/staging/api.deploy:1: no image")
    assert "did its build finish?" in outcome.message
    assert result.exit_code == 2 and result.writes() == 0


def test_registry_down_refuses_instead_of_applying_an_unverified_tag(
    cluster, namespace, make_repo, unused_registry_host
):
    repo = deploy_repo(cluster, make_repo, f"{unused_registry_host}/shop/api", {"staging": namespace}, sha("x"))
    result = reconcile(repo, cluster)
    (outcome,) = result.outcomes
    assert outcome.result == "refused" and result.writes() == 0


def test_a_tag_repushed_after_staging_is_refused_in_production_unless_allowed(
    cluster, namespace, production_ns, make_repo, registry, pusher, unique_repo, tmp_path
):
    commit = sha("retagged")
    image = f"{registry.host}/{unique_repo}"
    tested = pusher.push_image(unique_repo, commit, annotation="tested")
    repo = deploy_repo(cluster, make_repo, image, {"staging": namespace, "production": production_ns}, commit,
                       requires=True)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    first = reconcile(repo, cluster, AuditTarget(url), ReconcileOptions(timing=Timing(timeout=60)))
    assert first.exit_code == 0, first.outcomes

    repushed = pusher.push_image(unique_repo, commit, annotation="rebuilt")  # same tag, other bytes
    assert repushed.digest != tested.digest
    repo.commit({"environments/production/api.deploy": f"{commit}\n* promoted from staging\n"})
    refused = reconcile(repo, cluster, AuditTarget(url), ReconcileOptions(selection=Selection(envs=("production",))))
    (outcome,) = refused.outcomes
    assert outcome.result == "refused"
    assert "the artifact changed after it was tested" in outcome.message
    assert refused.writes() == 0

    allowed = reconcile(repo, cluster, AuditTarget(url), ReconcileOptions(
        selection=Selection(envs=("production",)), overrides=Overrides(allow_retagged=True), timing=Timing(timeout=60)))
    assert allowed.exit_code == 0, allowed.outcomes
    d = cluster.read_deployment(production_ns, "api")
    assert d.spec.template.spec.containers[0].image.endswith(repushed.digest)


def forge_staging_success(db: Path, *, copy_of: int, digest: str) -> int:
    """What a holder of the database role alone can do: insert a newer 'succeeded' staging run of the same
    SHA, claiming ``digest`` ran, with plain SQL (no chain columns, no MAC). Returns the forged attempt's id."""
    now = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn = sqlite3.connect(db)
    try:
        skip = {"id", "digest", "started_at", "chain_seq", "chain_prev", "chain_hash", "chain_mac"}
        cols = [row[1] for row in conn.execute("PRAGMA table_info(attempts)") if row[1] not in skip]
        listed = ", ".join(cols)
        forged = conn.execute(
            f"INSERT INTO attempts ({listed}, digest, started_at) SELECT {listed}, ?, ? FROM attempts WHERE id = ?",
            (digest, now, copy_of),
        ).lastrowid
        conn.execute("INSERT INTO outcomes (attempt_id, result, digest, finished_at, recorded_at) "
                     "VALUES (?, 'succeeded', ?, ?, ?)", (forged, digest, now, now))  # fmt: skip
        conn.commit()
    finally:
        conn.close()
    assert forged is not None
    return forged


def test_a_forged_staging_row_cannot_vouch_for_a_repushed_tag_and_is_named_in_the_refusal(
    cluster, namespace, production_ns, make_repo, registry, pusher, unique_repo, tmp_path, monkeypatch
):
    """Issue 24: the digest production checks against comes only from audit rows the chain verifies."""
    monkeypatch.setenv("DEPLOYCTL_AUDIT_KEY", "a-test-key-of-32-characters-long")
    commit = sha("forged-staging-row")
    image = f"{registry.host}/{unique_repo}"
    tested = pusher.push_image(unique_repo, commit, annotation="tested")
    repo = deploy_repo(cluster, make_repo, image, {"staging": namespace, "production": production_ns}, commit,
                       requires=True)
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    first = reconcile(repo, cluster, AuditTarget(url), ReconcileOptions(timing=Timing(timeout=60)))
    assert first.exit_code == 0, first.outcomes

    repushed = pusher.push_image(unique_repo, commit, annotation="swapped")  # same tag, other bytes
    forged = forge_staging_success(db, copy_of=1, digest=repushed.digest)
    repo.commit({"environments/production/api.deploy": f"{commit}\n* promoted from staging\n"})
    refused = reconcile(repo, cluster, AuditTarget(url), ReconcileOptions(selection=Selection(envs=("production",)),
                                                                          timing=Timing(timeout=60)))
    (outcome,) = refused.outcomes
    assert outcome.result == "refused", outcome.message
    assert f"not {tested.digest[:19]}… which ran in staging: the artifact changed after it was tested" in (
        outcome.message)
    assert (f"not counted: attempt {forged}'s claim that {repushed.digest[:19]}… ran in staging (attempt "
            f"{forged} was inserted with SQL") in outcome.message
    assert refused.writes() == 0
    d = cluster.read_deployment(production_ns, "api")
    assert repushed.digest not in d.spec.template.spec.containers[0].image


def test_validate_check_images_names_the_deploy_file_of_a_missing_image(make_repo, registry, pusher, unique_repo,
                                                                         unused_registry_host):
    from click.testing import CliRunner

    from deployctl.cli import main

    built, missing = sha("built"), sha("missing")
    pusher.push_image(unique_repo, built)
    repo = make_repo()
    repo.commit({
        "deployctl.yaml": (
            "version: 1\napps:\n"
            f"  api:\n    image: {registry.host}/{unique_repo}\n"
            f"  web:\n    image: {registry.host}/{unique_repo}\n"
            f"  worker:\n    image: {unused_registry_host}/shop/worker\n"
            "environments:\n  staging:\n    namespace: shop\n"
        ),
        "environments/staging/api.deploy": f"{built}\n",
        "environments/staging/web.deploy": f"{missing}\n",
        "environments/staging/worker.deploy": f"{built}\n",
    })
    runner = CliRunner()
    result = runner.invoke(main, ["validate", "--repo", str(repo.path), "--check-images"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"environments/staging/web.deploy:1: no image {registry.host}/{unique_repo}:")
    assert "did its build finish?" in lines[0]
    assert any(line.startswith("environments/staging/worker.deploy:1:") and line.endswith("(warning)")
               for line in lines)
    strict = runner.invoke(main, ["validate", "--repo", str(repo.path), "--check-images", "--strict"])
    assert strict.exit_code == 1
    assert not any(line.endswith("(warning)") for line in strict.stdout.splitlines()[:-1])


def test_diff_check_images_flags_a_changed_target_whose_image_was_never_built(make_repo, registry, pusher,
                                                                               unique_repo):
    from click.testing import CliRunner

    from deployctl.cli import main

    built, missing = sha("diff-built"), sha("diff-missing")
    pusher.push_image(unique_repo, built)
    repo = make_repo()
    cfg = f"version: 1\napps:\n  api:\n    image: {registry.host}/{unique_repo}\n" \
          "environments:\n  staging:\n    namespace: shop\n"
    base = repo.commit({"deployctl.yaml": cfg, "environments/staging/api.deploy": f"{built}\n"})
    repo.commit({"environments/staging/api.deploy": f"{missing}\n{built}\n"})
    runner = CliRunner()
    ok = runner.invoke(main, ["diff", "--repo", str(repo.path), "--base", base, "--head", "HEAD"])
    assert ok.exit_code == 0, ok.output
    checked = runner.invoke(main, ["diff", "--repo", str(repo.path), "--base", base, "--head", "HEAD",
                                   "--check-images"])
    assert checked.exit_code == 1
    assert f"error: environments/staging/api.deploy:1: no image {registry.host}/{unique_repo}:" in checked.stdout
