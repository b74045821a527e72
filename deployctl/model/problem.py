"""A problem found in a deploy repo: where it is, what is wrong and what to do. Pure data."""

from __future__ import annotations

from dataclasses import dataclass

from deployctl.model.printable import printable

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) in the deploy repo, with where it is and what to do."""

    path: str
    line: int | None
    message: str
    severity: str = ERROR  # "error" | "warning"
    env: str | None = None
    app: str | None = None

    def __str__(self) -> str:
        """``path:line: message``, safe to print (paths come from the repo; see :mod:`printable`)."""
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return printable(f"{where}: {self.message}")

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "message": self.message,
            "severity": self.severity,
            "env": self.env,
            "app": self.app,
        }
