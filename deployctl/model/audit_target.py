"""Where a command keeps its audit history: a value the CLI builds from ``--audit``/``--no-audit``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditTarget:
    """Where a command keeps its audit history: nowhere (``--no-audit``), the default store
    (``$DEPLOYCTL_AUDIT``, else the local SQLite file), or the store at ``url``."""

    url: str | None = None
    off: bool = False

    @classmethod
    def at(cls, url: str | None, *, off: bool = False, default: AuditTarget | None = None) -> AuditTarget:
        """The target of ``--audit URL`` / ``--no-audit``: off wins, then the URL, then ``default``."""
        if off:
            return AUDIT_OFF
        if url:
            return cls(url)
        return default if default is not None else AUDIT_DEFAULT

    @property
    def named(self) -> bool:
        """A store was named (``--audit`` or ``$DEPLOYCTL_AUDIT``): evidence a promotion gate may rely on,
        which a default local file is not."""
        return self.url is not None and not self.off


AUDIT_OFF = AuditTarget(off=True)
AUDIT_DEFAULT = AuditTarget()
