"""Where the audit store is (``$DEPLOYCTL_AUDIT``, ``sqlite:///...``, ``postgresql://...``) and opening it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from deployctl import settings
from deployctl.edges.audit.postgres import PostgresStore
from deployctl.edges.audit.sqlite import SqliteStore
from deployctl.errors import InvalidInputError
from deployctl.model.audit import AuditError, AuditStore

AUDIT_ENV = settings.AUDIT.name


def default_sqlite_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/deployctl/audit.db``, i.e. ``~/.local/state/deployctl/audit.db`` by default."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "deployctl" / "audit.db"


def default_audit_url() -> str:
    """``$DEPLOYCTL_AUDIT`` when set, else the SQLite file at :func:`default_sqlite_path`."""
    return os.environ.get(AUDIT_ENV) or f"sqlite://{default_sqlite_path()}"


def sqlite_path_from_url(url: str) -> Path:
    """The file of a SQLite URL: ``sqlite:///abs/path.db``, ``sqlite:relative.db`` or a plain path."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/"):
            raise InvalidInputError(
                f"audit URL {url!r}: write sqlite:///absolute/path.db or sqlite:relative/path.db"
            )
        path = "/" + rest.lstrip("/")
    elif url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
    else:
        path = url
    if not path:
        raise InvalidInputError(f"audit URL {url!r} names no file")
    return Path(path)


def open_store(url: str | None = None, *, create: bool = True) -> AuditStore:
    """Open (and migrate) the store at ``url`` (default: :func:`default_audit_url`).

    With ``create=False`` a SQLite file that does not exist is an error instead of a new store.
    """
    url = url or default_audit_url()
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if "://" in url and not url.startswith("sqlite://"):
        raise InvalidInputError(
            f"audit URL {url!r}: use sqlite:///path/audit.db or postgresql://user@host:port/dbname"
        )
    path = sqlite_path_from_url(url)
    if not create and not path.exists():
        raise AuditError(f"no audit database at {path}; pass --audit URL or set {AUDIT_ENV}")
    return SqliteStore(path)
