"""The forge (GitHub, GitLab, Gitea): pull requests, their reviews and team membership, as model values.

Where the forge and the repository live is a setting of the runner (``DEPLOYCTL_FORGE_TYPE``, ``_URL``,
``_REPO``, ``_TOKEN``), never repo content: a pull request cannot point deployctl at another forge.
Every call goes through the project's HTTP client (total deadlines, bounded bodies); the token is sent
to the forge's own scheme, host and port only, never after a redirect elsewhere and never over plain
http to a non-loopback host. :func:`open_forge` builds the one for the settings.
"""

from __future__ import annotations

from deployctl.edges.forge.client import Forge, ForgeError, ForgeSettings
from deployctl.edges.forge.gitea import Gitea
from deployctl.edges.forge.github import GitHub
from deployctl.edges.forge.gitlab import GitLab
from deployctl.edges.http import HttpClient

__all__ = ["Forge", "ForgeError", "ForgeSettings", "open_forge"]

_KINDS: dict[str, type[Forge]] = {"gitea": Gitea, "github": GitHub, "gitlab": GitLab}


def open_forge(forge: ForgeSettings, *, http: HttpClient | None = None) -> Forge:
    """The client for ``forge.kind``."""
    forge.check()
    return _KINDS[forge.kind](forge, http=http)
