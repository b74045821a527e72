"""How much of the deploy repo deployctl reads: bounds on untrusted content, set by the operator.

The repo's content comes from pull requests, so the bounds are never read from the repo itself:
they are keyword arguments, or ``$DEPLOYCTL_MAX_DEPLOY_FILE_BYTES``, ``$DEPLOYCTL_MAX_CONFIG_BYTES``
and ``$DEPLOYCTL_MAX_HISTORY_COMMITS`` in the environment of the process running deployctl.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from deployctl import settings
from deployctl.errors import InvalidInputError

DEPLOY_FILE_BYTES = 64 * 1024
CONFIG_BYTES = 1024 * 1024
HISTORY_COMMITS = 10_000

_ENV = {
    "deploy_file_bytes": settings.MAX_DEPLOY_FILE_BYTES.name,
    "config_bytes": settings.MAX_CONFIG_BYTES.name,
    "history_commits": settings.MAX_HISTORY_COMMITS.name,
}


@dataclass(frozen=True)
class ReadLimits:
    """The largest deploy file and deployctl.yaml read (a bigger one is an error naming it, and is
    never read), and how many commits a history walk (promotion gates, rollback) looks at."""

    deploy_file_bytes: int = DEPLOY_FILE_BYTES
    config_bytes: int = CONFIG_BYTES
    history_commits: int = HISTORY_COMMITS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReadLimits:
        """The defaults, overridden by those of the three variables above that are set."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for field_name, var in _ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if not raw.isdigit() or int(raw) < 1:
                raise InvalidInputError(f"${var}={raw!r}: give a whole number of at least 1")
            values[field_name] = int(raw)
        return cls(**values)


DEFAULT_LIMITS = ReadLimits()
