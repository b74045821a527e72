"""Where each environment may reach: allowlists that bind a kubeconfig context to a namespace, and one
environment per context + namespace (pure decisions; the kubeconfig is read by the caller).

``--allow-namespace`` / ``DEPLOYCTL_ALLOW_NAMESPACES`` entries are ``context/namespace`` pairs; a bare
``namespace`` means that namespace in the current context only. An environment is a (context, namespace)
pair, its context resolved (``--context``, else its ``context:``, else the current context).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: env -> (resolved context or None for the current / in-cluster one, namespace)
Reach = Mapping[str, tuple[str | None, str]]


@dataclass(frozen=True)
class Allowed:
    """One allowlist entry: ``namespace`` in ``context`` (None: the current context)."""

    context: str | None
    namespace: str

    def __str__(self) -> str:
        return f"{self.context}/{self.namespace}" if self.context else self.namespace


def parse_allowed(values: Iterable[str]) -> tuple[Allowed, ...]:
    """``ctx/ns`` and ``ns`` entries (a context may hold ``/``, a namespace never does)."""
    out: list[Allowed] = []
    for value in values:
        context, _, namespace = value.strip().rpartition("/")
        if namespace:
            out.append(Allowed(context or None, namespace))
    return tuple(out)


def _where(context: str | None, namespace: str) -> str:
    return f"namespace {namespace!r} in context {context!r}" if context else f"namespace {namespace!r} in the current context"


def allowlist_refusals(reach: Reach, allowed: Iterable[Allowed], *, current_context: str | None) -> dict[str, str]:
    """Environments whose context + namespace no allowlist entry names (env -> reason)."""
    entries = tuple(allowed)
    if not entries:
        return {}
    refused: dict[str, str] = {}
    for env, (context, namespace) in sorted(reach.items()):
        context = context or current_context
        if any(a.namespace == namespace and (a.context or current_context) == context for a in entries):
            continue
        others = [a for a in entries if a.namespace == namespace]
        hint = (f"; {namespace!r} is allowed only in " + ", ".join(repr(a.context or current_context) for a in others)
                if others else "")
        refused[env] = (
            f"environment {env}: {_where(context, namespace)} is not allowed by --allow-namespace "
            f"({', '.join(str(a) for a in entries)}){hint}; the deploy repo cannot widen deployctl's reach"
        )
    return refused


def shared_targets(reach: Reach) -> dict[str, str]:
    """Environments that share one context + namespace with another (env -> reason): a change in one
    would bypass the other's freeze, approval and promotion rules."""
    groups: dict[tuple[str | None, str], list[str]] = {}
    for env, where in reach.items():
        groups.setdefault(where, []).append(env)
    refused: dict[str, str] = {}
    for (context, namespace), envs in groups.items():
        if len(envs) < 2:
            continue
        names = " and ".join(sorted(envs))
        for env in envs:
            refused[env] = (
                f"environment {env}: environments {names} share {_where(context, namespace)}; give each "
                "environment its own namespace (or context), so one cannot bypass the other's rules"
            )
    return refused
