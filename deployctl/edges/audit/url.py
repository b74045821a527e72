"""Where the audit store is (``$DEPLOYCTL_AUDIT``, ``sqlite:///...``, ``postgresql://...``) and opening it."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from deployctl import settings
from deployctl.edges.audit.chain import AuditKeys
from deployctl.edges.audit.postgres import PostgresStore
from deployctl.edges.audit.sqlite import SqliteStore
from deployctl.errors import InvalidInputError
from deployctl.model.audit import AuditError, AuditStore
from deployctl.model.audit_target import AuditTarget
from deployctl.redact import redact

AUDIT_ENV = settings.AUDIT.name
PG_CONNECT_TIMEOUT_SECONDS = 10
_LIBPQ_KEYWORD = re.compile(r"^\s*[A-Za-z_]+\s*=")
_FORMS = "use sqlite:///absolute/path.db, sqlite:relative/path.db, a plain file path, or postgresql://user@host:port/dbname"


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
                f"audit URL {redact(url)!r}: write sqlite:///absolute/path.db or sqlite:relative/path.db"
            )
        path = "/" + rest.lstrip("/")
    elif url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
    else:
        path = url
    if not path:
        raise InvalidInputError(f"audit URL {redact(url)!r} names no file")
    return Path(path)


def open_store(url: str | None = None, *, create: bool = True, keys: AuditKeys | None = None) -> AuditStore:
    """Open (and migrate) the store at ``url`` (default: :func:`default_audit_url`).

    With ``create=False`` a SQLite file that does not exist is an error instead of a new store.
    ``keys`` sign and check the chain's MACs (default: ``$DEPLOYCTL_AUDIT_KEY``, else none).
    """
    url = url or default_audit_url()
    keys = keys if keys is not None else AuditKeys.from_env()
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(with_connect_timeout(url), keys=keys)
    check_audit_url(url)
    path = sqlite_path_from_url(url)
    if not create and not path.exists():
        raise AuditError(f"no audit database at {path}; pass --audit URL or set {AUDIT_ENV}")
    return SqliteStore(path, keys=keys)


def open_target(target: AuditTarget, *, create: bool = True) -> AuditStore | None:
    """The store ``target`` names (None when the audit history is off); see :func:`open_store`."""
    return None if target.off else open_store(target.url, create=create)


def check_audit_url(url: str) -> None:
    """Refuse what is neither ``sqlite:``, a plain path nor ``postgresql://``: it must never become a file name."""
    if _LIBPQ_KEYWORD.match(url):
        raise InvalidInputError(
            f"audit URL {redact(url)!r} looks like a libpq connection string (key=value); write it as "
            "postgresql://user@host:port/dbname (password in PGPASSWORD or ~/.pgpass)"
        )
    scheme = urllib.parse.urlsplit(url).scheme
    if ("://" in url and not url.startswith("sqlite://")) or (
        scheme and len(scheme) > 1 and scheme != "sqlite"
    ):
        raise InvalidInputError(f"audit URL {redact(url)!r}: {_FORMS}")
    if any(ord(c) < 32 for c in url):
        raise InvalidInputError(f"audit URL {redact(url)!r} has control characters; {_FORMS}")


def with_connect_timeout(url: str) -> str:
    """A PostgreSQL URL with ``connect_timeout`` (a total connect deadline) unless it names one already."""
    parts = urllib.parse.urlsplit(url)
    if "connect_timeout" in urllib.parse.parse_qs(parts.query):
        return url
    query = (parts.query + "&" if parts.query else "") + f"connect_timeout={PG_CONNECT_TIMEOUT_SECONDS}"
    return urllib.parse.urlunsplit(parts._replace(query=query))
