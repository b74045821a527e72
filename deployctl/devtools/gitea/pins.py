"""The pinned Gitea release. Changing a pin triggers a rebuild.

v1.27 and later moved to another module path that the Go proxy here cannot fetch; v1.26.0 is the
newest release built the way :mod:`deployctl.devtools.gitea.build` does.
"""

from __future__ import annotations

import hashlib
import json

GITEA = "v1.26.0"
MODULE = "code.gitea.io/gitea"
TAGS = "sqlite sqlite_unlock_notify"
# Bump to force a rebuild when the build recipe itself changes.
RECIPE = 1


def as_dict() -> dict[str, object]:
    return {"gitea": GITEA, "tags": TAGS, "recipe": RECIPE}


def cache_key() -> str:
    """A short, stable directory name for the current pins."""
    digest = hashlib.sha256(json.dumps(as_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return f"gitea-{GITEA}-{digest}"
