"""Immutable artifacts: resolve each target's image tag to a digest once, pin it, and prove that
a promoted SHA runs the same bytes that were tested.

Decisions are pure (:func:`pin_decisions`) over resolutions made by the registry edge
(:mod:`deployctl.edges.registry.client`), one request per distinct reference, concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import structlog

from deployctl.edges.registry.client import RegistryClient, Resolution, check_retagged
from deployctl.model.audit import AuditStore
from deployctl.model.config import Config
from deployctl.model.imageref import short_digest
from deployctl.model.printable import printable
from deployctl.model.problem import ERROR, WARNING, Problem
from deployctl.model.state import DesiredState, Target
from deployctl.model.vocabulary import RAN

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DigestEvidence:
    """The digest a SHA ran with in an environment, read only from audit rows that verify (docs/audit.md),
    and the rows that claimed a digest but do not verify, each as a sentence naming the row."""

    digest: str | None = None
    rejected: tuple[str, ...] = ()


TestedDigest = Callable[[str, str, str], DigestEvidence]
"""(env, app, sha) -> the digest that ran successfully there, if known, and the claims not believed."""


@dataclass(frozen=True)
class PinDecisions:
    """Per (env, app): the image reference to apply, or why the target must not be applied."""

    images: Mapping[tuple[str, str], str] = field(default_factory=dict)
    refusals: Mapping[tuple[str, str], str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    resolutions: Mapping[str, Resolution] = field(default_factory=dict)


def pin_mode(config: Config | None, app: str) -> str:
    if config is None or app not in config.apps:
        return "digest"
    return config.apps[app].pin


def references_to_resolve(targets: Iterable[Target], config: Config | None) -> list[str]:
    """The distinct image references that need a digest (apps with ``pin: digest``)."""
    return sorted({t.image for t in targets if pin_mode(config, t.app) == "digest"})


def pin_decisions(
    targets: Iterable[Target],
    config: Config | None,
    resolutions: Mapping[str, Resolution],
    *,
    tested_digest: TestedDigest | None = None,
    allow_retagged: bool = False,
) -> PinDecisions:
    """Pure: turn resolutions into the images to apply and the targets to refuse."""
    images: dict[tuple[str, str], str] = {}
    refusals: dict[tuple[str, str], str] = {}
    for t in targets:
        if pin_mode(config, t.app) != "digest":
            continue
        res = resolutions.get(t.image)
        if res is None or not res.found or not res.digest:
            why = res.message if res and res.message else f"cannot resolve {t.image}"
            refusals[t.key] = f"{t.path}:{t.line}: {why}"
            continue
        images[t.key] = f"{t.image}@{res.digest}"
        if tested_digest is None or config is None or allow_retagged:
            continue
        env = config.environments.get(t.env)
        for required in env.requires if env else ():
            message = _untested(tested_digest(required, t.app, t.sha), res, required)
            if message:
                refusals[t.key] = f"{t.path}:{t.line}: {message}"
                break
    return PinDecisions(images=images, refusals=refusals, resolutions=dict(resolutions))


def _untested(tested: DigestEvidence, res: Resolution, required: str) -> str | None:
    """Why ``res`` is not the artifact that ran in ``required``, or None.

    Only verified rows say what ran. When every row that names a digest fails to verify, nothing says
    what was tested, so the target is refused (fail closed) rather than left unchecked.
    """
    rejected = "".join(f"; not counted: {reason}" for reason in tested.rejected)
    if tested.digest is not None:
        message = check_retagged(tested.digest, res, tested_in=required)
        return None if message is None else message + rejected
    if not tested.rejected:
        return None
    return (
        f"no audit row that verifies says which digest ran in {required}{rejected}. Run `deployctl audit "
        "verify` and look into the store, or pass --allow-retagged to deploy without the check"
    )


def resolve_targets(
    targets: Iterable[Target],
    config: Config | None,
    client: RegistryClient,
    *,
    tested_digest: TestedDigest | None = None,
    allow_retagged: bool = False,
) -> PinDecisions:
    """Resolve every ``pin: digest`` target's image once (concurrently) and decide."""
    targets = list(targets)
    refs = references_to_resolve(targets, config)
    resolutions = client.resolve_many(refs) if refs else {}
    return pin_decisions(targets, config, resolutions, tested_digest=tested_digest,
                         allow_retagged=allow_retagged)


def image_problems(
    targets: Iterable[Target], resolutions: Mapping[str, Resolution], *, strict: bool = False
) -> list[Problem]:
    """Problems for ``validate --check-images`` and ``diff``: a missing image is an error naming
    the deploy file and line; an unreachable registry is a warning (an error with ``strict``)."""
    problems: list[Problem] = []
    for t in targets:
        res = resolutions.get(t.image)
        if res is None or res.found:
            continue
        severity = ERROR if res.status.fails_a_check or strict else WARNING
        problems.append(Problem(path=t.path, line=t.line, message=res.message or f"cannot resolve {t.image}",
                                severity=severity, env=t.env, app=t.app))
    return problems


def known_pins(
    targets: Iterable[Target], config: Config | None, live_images_applied: Mapping[tuple[str, str], set[str | None]]
) -> dict[tuple[str, str], str]:
    """Digests already pinned by an earlier apply of the same tag, read from the workloads'
    ``deployctl.dev/image`` annotations (keyed by (namespace, app)): no registry call needed."""
    known: dict[tuple[str, str], str] = {}
    for t in targets:
        if pin_mode(config, t.app) != "digest":
            continue
        applied = live_images_applied.get((t.namespace, t.app), set())
        if len(applied) == 1:
            (image,) = applied
            if image and image.startswith(t.image + "@sha256:"):
                known[t.key] = image
    return known


def check_images(state: DesiredState, client: RegistryClient, *, strict: bool = False,
                 only: Iterable[tuple[str, str]] | None = None) -> DesiredState:
    """``state`` with a problem for every target whose image is missing (error) or could not be
    checked (warning; error with ``strict``). ``only`` limits the check to some (env, app) keys."""
    keys = set(only) if only is not None else None
    targets = [t for t in state.targets if keys is None or t.key in keys]
    refs = sorted({t.image for t in targets})
    resolutions = client.resolve_many(refs) if refs else {}
    extra = image_problems(targets, resolutions, strict=strict)
    return replace(state, problems=(*state.problems, *extra))


def audit_tested_digest(store: AuditStore) -> TestedDigest:
    """The digest each SHA was tested with, from the audit history: the newest successful run that names
    one and whose rows verify in the chain. A row inserted or edited behind deployctl's back never
    supplies it; it comes back as a reason naming the row, as the promotion gates do."""

    def tested(env: str, app: str, sha: str) -> DigestEvidence:
        claims = [r for r in store.query(env=env, app=app, sha=sha, limit=20)
                  if r.attempt.new_sha == sha and r.result in RAN and r.digest]  # fmt: skip
        unverified = store.unverified([r.id for r in claims]) if claims else {}
        rejected: list[str] = []
        for record in claims:
            reason = unverified.get(record.id)
            if reason is None:
                return DigestEvidence(str(record.digest), tuple(rejected))
            log.warning("pin.audit_row_unverified", attempt=record.id, env=env, app=app, reason=reason)
            claimed = printable(short_digest(str(record.digest)[:100]))
            rejected.append(f"attempt {record.id}'s claim that {claimed} ran in {env} ({reason})")
        return DigestEvidence(None, tuple(rejected))

    return tested


def registry_pinner(
    desired: DesiredState, store: AuditStore | None, *, allow_retagged: bool = False
) -> Callable[[Sequence[Target]], PinDecisions]:
    """A reconcile pinner: resolves through the registry edge; the digest a SHA was tested with
    comes from the verified audit history (``store``), when there is one."""
    tested_digest = None if store is None else audit_tested_digest(store)

    # One resolution per reference and run, although each environment pins on its own (in parallel):
    # an environment resolves under the lock, the next one finds the references already resolved.
    resolved: dict[str, Resolution] = {}
    lock = threading.Lock()

    def pin(targets: Sequence[Target]) -> PinDecisions:
        refs = references_to_resolve(targets, desired.config)
        with lock:
            todo = [r for r in dict.fromkeys(refs) if r not in resolved]
            if todo:
                with RegistryClient() as client:
                    resolved.update(client.resolve_many(todo))
            resolutions = {r: resolved[r] for r in refs}
        return pin_decisions(targets, desired.config, resolutions, tested_digest=tested_digest,
                             allow_retagged=allow_retagged)

    return pin
