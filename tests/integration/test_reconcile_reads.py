"""What a CI reconcile reads after it takes an app's lock: the workloads it is about to write, as they are now
(a run that held the lock may have written them), without a LIST of the whole namespace per wave."""

from __future__ import annotations

import hashlib

from click.testing import CliRunner

from deployctl.cli import main

IMAGE = "registry.example.com/shop"
APPS = [f"app{i:02d}" for i in range(24)]


def sha(word: str) -> str:
    return hashlib.sha1(word.encode()).hexdigest()


def test_the_workloads_re_read_under_their_locks_are_read_one_by_one_not_by_a_list_of_the_namespace(
        cluster, namespace, make_repo):
    # 24 labelled Deployments, 22 already running their deploy file's SHA: a reconcile writes 2. At 10,000
    # app-environments the LIST per wave (64 apps) of 2,500 Deployments each, beside their rollouts, timed
    # out on a 2-core API server; the observe step's LIST is the one a run needs.
    changed = {"app03", "app17"}
    for app in APPS:
        cluster.deployment(namespace, app, image=f"{IMAGE}/{app}:{sha(app + ('-0' if app in changed else '-1'))}")
    repo = make_repo()
    lines = ["version: 1", "apps:"] + [f"  {a}: {{image: {IMAGE}/{a}, pin: tag}}" for a in APPS]
    lines += ["environments:", f"  staging: {{namespace: {namespace}}}"]
    repo.commit({"deployctl.yaml": "\n".join(lines) + "\n",
                 **{f"environments/staging/{a}.deploy": sha(a + "-1") + "\n" for a in APPS}}, message="deploy")
    result = CliRunner().invoke(main, ["reconcile", "--repo", str(repo.path), "--kubeconfig", cluster.kubeconfig,
                                       "--no-audit", "--timeout", "60"])
    assert result.exit_code == 0, result.output
    assert "2 succeeded" in result.stdout and "22 in-sync" in result.stdout, result.stdout
    for app in APPS:
        image = cluster.read_deployment(namespace, app).spec.template.spec.containers[0].image
        assert image == f"{IMAGE}/{app}:{sha(app + '-1')}"
    lists = cluster.audited(namespace, verb="list", resource="deployments")
    assert len(lists) == 1, [(e["userAgent"], e["requestURI"]) for e in lists]  # the observe step's
