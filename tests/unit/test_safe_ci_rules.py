"""Pure rules of issue 12: the ordering verdicts, context-bound allowlists, one environment per context +
namespace, and how the files of a KUBECONFIG are merged."""

from __future__ import annotations

import os
from pathlib import Path

from deployctl.edges.kube.kubeconfig import merged_kubeconfig
from deployctl.model.config import load_config
from deployctl.rules.ordering import Relation, Verdict, decide, worst
from deployctl.rules.reach import Allowed, allowlist_refusals, parse_allowed, shared_targets
from deployctl.rules.validation import shared_target_problems

NEW = "b" * 40
OLD = "a" * 40


def test_a_newer_live_commit_is_skipped_unless_forced_and_the_override_is_noted() -> None:
    skip = decide(NEW, OLD, Relation.LIVE_NEWER)
    assert skip.verdict is Verdict.SKIP
    assert skip.message.startswith("skipped: live deploy commit bbbbbbb is newer than aaaaaaa")
    forced = decide(NEW, OLD, Relation.LIVE_NEWER, force_older=True)
    assert forced.verdict is Verdict.APPLY and forced.note and "--force-older" in forced.note
    assert decide(NEW, OLD, Relation.FORWARD).verdict is Verdict.APPLY


def test_another_history_is_refused_unless_allowed_and_a_shallow_clone_says_how_to_fix_it() -> None:
    refused = decide(NEW, OLD, Relation.DIVERGED)
    assert refused.verdict is Verdict.REFUSE and "--allow-non-descendant" in refused.message
    assert decide(NEW, OLD, Relation.DIVERGED, allow_non_descendant=True).verdict is Verdict.APPLY
    unknown = decide(NEW, OLD, Relation.UNKNOWN)
    assert unknown.verdict is Verdict.REFUSE and "fetch-depth: 0" in unknown.message
    assert worst([decide(NEW, OLD, Relation.FORWARD), unknown, decide(NEW, OLD, Relation.LIVE_NEWER)]) == unknown


def test_allowlist_entries_bind_a_context_and_a_bare_namespace_means_the_current_context() -> None:
    allowed = parse_allowed(["shop-staging", "prod-cluster/shop", "arn:aws:eks:x:cluster/a/b"])
    assert allowed == (Allowed(None, "shop-staging"), Allowed("prod-cluster", "shop"),
                       Allowed("arn:aws:eks:x:cluster/a", "b"))
    reach = {"staging": ("dev", "shop-staging"), "production": ("prod-cluster", "shop"),
             "sneaky": ("prod-cluster", "shop-staging")}
    refused = allowlist_refusals(reach, allowed, current_context="dev")
    assert set(refused) == {"sneaky"}
    assert "namespace 'shop-staging' in context 'prod-cluster' is not allowed" in refused["sneaky"]
    assert "allowed only in 'dev'" in refused["sneaky"]


def test_two_environments_on_one_context_and_namespace_are_refused_with_the_config_line() -> None:
    assert set(shared_targets({"a": ("c", "ns"), "b": ("c", "ns"), "c": ("d", "ns")})) == {"a", "b"}
    config, problems = load_config(
        b"version: 1\napps:\n  api: {image: r/api}\nenvironments:\n"
        b"  staging: {namespace: shop}\n  production: {namespace: shop}\n"
    )
    assert config is not None and not problems
    found = shared_target_problems(config)
    assert [(p.env, p.line) for p in found] == [("production", 6), ("staging", 5)]
    assert "environments production and staging share namespace 'shop' in the current context" in found[0].message


def test_every_kubeconfig_file_is_read_and_the_first_one_wins_per_name(tmp_path: Path) -> None:
    first = tmp_path / "one.yaml"
    second = tmp_path / "two.yaml"
    first.write_text("current-context: a\nclusters: [{name: c, cluster: {server: 'https://one'}}]\n"
                     "contexts: [{name: a, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\n")
    second.write_text("current-context: b\nclusters: [{name: c, cluster: {server: 'https://two'}}, "
                      "{name: d, cluster: {server: 'https://three', certificate-authority: ca.crt}}]\n"
                      "contexts: [{name: b, context: {cluster: d, user: u}}]\n")
    merged = merged_kubeconfig(os.pathsep.join([str(first), str(tmp_path / "missing"), str(second)]))
    assert merged["current-context"] == "a"
    assert [(c["name"], c["cluster"]["server"]) for c in merged["clusters"]] == [("c", "https://one"),
                                                                                ("d", "https://three")]
    assert merged["clusters"][1]["cluster"]["certificate-authority"] == str(tmp_path / "ca.crt")
    assert [c["name"] for c in merged["contexts"]] == ["a", "b"]
