"""Forge approvals (``require_approval: forge``): whether a target's pull request has the approving
reviews its environment asks for, judged under the settings the change did not weaken. Used by
:mod:`deployctl.reconcile.policy`; fails closed when the forge cannot say."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import structlog

from deployctl.edges.forge import Forge, ForgeError, ForgeSettings, open_forge
from deployctl.edges.git import history
from deployctl.edges.git import repo as repo_edge
from deployctl.edges.http import HttpClient
from deployctl.model.config import CONFIG_PATH, Config, load_config
from deployctl.model.review import ReviewFacts
from deployctl.model.state import DesiredState, Target
from deployctl.rules.review import RULE as REVIEW_RULE
from deployctl.rules.review import ReviewPolicy, ReviewVerdict, check_reviews, judged_under

log = structlog.get_logger(__name__)


# --- forge approvals ------------------------------------------------------------------------------


class _FactsCache:
    """What the forge said about a change, kept for FACTS_TTL seconds in this process: the controller
    reconciles every interval, and a forge's API has a rate limit (GitHub: 5,000 requests an hour).
    Only answers are kept; an error is asked again on the next run."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[tuple[object, ...], tuple[float, ReviewFacts]] = {}

    def get(self, key: tuple[object, ...]) -> ReviewFacts | None:
        with self._lock:
            found = self._items.get(key)
            if found is None or time.monotonic() - found[0] > self.ttl:
                self._items.pop(key, None)
                return None
            return found[1]

    def put(self, key: tuple[object, ...], facts: ReviewFacts) -> None:
        with self._lock:
            if len(self._items) > 1000:
                self._items.clear()
            self._items[key] = (time.monotonic(), facts)


FACTS_TTL = 60.0
_FACTS = _FactsCache(FACTS_TTL)


class _ConfigsAt:
    """deployctl.yaml as it was at given commits (the settings a change is judged under), read once each."""

    def __init__(self, repo: str | Path) -> None:
        self.repo = repo
        self._seen: dict[str, Config | None] = {}

    def __call__(self, sha: str | None) -> Config | None:
        if sha is None:
            return None
        if sha not in self._seen:
            try:
                data = history.read_file_at(self.repo, CONFIG_PATH, ref=sha)
            except repo_edge.RepoError:
                data = None
            self._seen[sha] = load_config(data)[0] if data is not None else None
        return self._seen[sha]


def forge_verdicts(
    desired: DesiredState,
    *,
    repo: str | Path,
    forge: ForgeSettings | None = None,
    http: HttpClient | None = None,
    targets: Iterable[Target] | None = None,
) -> dict[tuple[str, str], ReviewVerdict]:
    """For each target judged under ``require_approval: forge``: do its pull request's reviews approve it?

    The change is the commit that last changed the target's deploy file and the merge that brought it to
    the ref; it is judged under deployctl.yaml as it was before that merge (or commit) when the change
    weakens the environment's approval settings. ``forge`` defaults to the forge settings (ForgeSettings.from_env).
    A forge that is not configured, unreachable or answering errors refuses (fails closed).
    """
    config = desired.config
    if config is None or desired.commit is None:
        return {}
    configs = _ConfigsAt(repo)
    watched = _forge_envs(desired, repo, configs)
    chosen = [t for t in (desired.targets if targets is None else targets) if t.env in watched]
    if not chosen:
        return {}
    out: dict[tuple[str, str], ReviewVerdict] = {}
    client: Forge | None = None
    facts: dict[tuple[tuple[str, ...], tuple[str, ...]], ReviewFacts | str] = {}
    try:
        for target in chosen:
            after = config.environments.get(target.env)
            try:
                changed, merge = history.introduction(repo, target.path, ref=desired.commit)
            except repo_edge.RepoError:
                changed, merge = None, None
            brought = merge or changed
            base = brought.parents[0] if brought is not None and brought.parents else None
            before_config = configs(base)
            before = before_config.environments.get(target.env) if before_config is not None else None
            judged = judged_under(before, after)
            if judged is None or not judged.forge_review:
                continue
            weakened = " (this change weakens the environment's approval settings, so it is judged under " \
                "the settings before it)" if judged is before and judged is not after else ""
            candidates = tuple(c.sha for c in (merge, changed) if c is not None)
            key = (candidates, tuple(sorted(a.lower() for a in judged.approvers)))
            if key not in facts:
                try:
                    settings_now = forge or ForgeSettings.from_env()
                    if settings_now is None:
                        raise ForgeError("no forge is configured: set DEPLOYCTL_FORGE_TYPE, DEPLOYCTL_FORGE_URL, "
                                         "DEPLOYCTL_FORGE_REPO and DEPLOYCTL_FORGE_TOKEN")
                    cached = _FACTS.get((settings_now.kind, settings_now.url, settings_now.repo, *key))
                    if cached is None:
                        if client is None:
                            client = open_forge(settings_now, http=http)
                        cached = client.review_facts(candidates, judged.approvers)
                        _FACTS.put((settings_now.kind, settings_now.url, settings_now.repo, *key), cached)
                    facts[key] = cached
                except ForgeError as exc:
                    log.error("forge.failed", env=target.env, app=target.app, error=str(exc))
                    facts[key] = str(exc)
            found = facts[key]
            if isinstance(found, str):
                verdict = ReviewVerdict(False, f"{REVIEW_RULE} (environments.{judged.name}): {found}; refused "
                                               "until the forge answers (forge approvals fail closed)")
            else:
                verdict = check_reviews(found, ReviewPolicy.of(judged))
            if weakened and not verdict.approved:
                verdict = replace(verdict, reason=verdict.reason + weakened)
            out[target.key] = verdict
            log.info("forge.approval", env=target.env, app=target.app, approved=verdict.approved,
                     reason=verdict.reason)
    finally:
        if client is not None:
            client.close()
    return out


def _forge_envs(desired: DesiredState, repo: str | Path, configs: _ConfigsAt) -> set[str]:
    """The environments that need the forge: ``require_approval: forge`` at the ref, or before the latest
    change of deployctl.yaml (a change that drops or weakens it is judged under the settings before it).
    Keeps the history walks off every reconcile of a repo that does not use forge approvals."""
    assert desired.config is not None and desired.commit is not None
    names = {name for name, env in desired.config.environments.items() if env.forge_review}
    try:
        changed, merge = history.introduction(repo, CONFIG_PATH, ref=desired.commit)
    except repo_edge.RepoError:
        return names
    brought = merge or changed
    before = configs(brought.parents[0]) if brought is not None and brought.parents else None
    if before is not None:
        names |= {name for name, env in before.environments.items() if env.forge_review}
    return names


def review_refusals(verdicts: Mapping[tuple[str, str], ReviewVerdict]) -> dict[tuple[str, str], str]:
    """The refusal of each target whose forge approval is missing."""
    return {key: v.reason for key, v in verdicts.items() if not v.approved}
