"""The ``deployctl`` console script: what runs before the CLI is imported.

structlog pretty-prints exceptions with rich when rich is importable (development tools such as
import-linter install it). deployctl renders plain key=value or JSON lines, so a CLI process
blocks that import instead of paying ~0.1 s of start-up for it; library users are not affected.
"""

from __future__ import annotations

import sys


def run() -> None:
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # makes `import rich` fail fast
    from deployctl.cli import run as cli_run

    cli_run()
