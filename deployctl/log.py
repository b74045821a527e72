"""structlog configuration: key-value events to stderr, JSON when stderr is not a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from deployctl.model.printable import printable
from deployctl.redact import redact


def _escape_text(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Repo-derived strings (paths, commit summaries) reach a terminal only escaped."""
    return {k: printable(v) if isinstance(v, str) else v for k, v in event.items()}

def redact_secrets(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A processor: every string value with URL passwords and ``password=`` values replaced by ``***``."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}


def configure_logging(level: str = "warning", *, json: bool | None = None) -> None:
    """Configure structlog once for a process. Library code only calls ``structlog.get_logger``."""
    numeric = getattr(logging, level.upper(), logging.WARNING)
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            *(() if json else (_escape_text,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # sys.stderr looked up per logger, not bound once: a replaced stream (a test runner's) may close
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
