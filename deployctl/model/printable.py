"""Repo-derived text made safe to print: one pure function every human and markdown renderer uses.

File and folder names, commit messages and author names come from pull requests. Printed raw, an
ESC sequence repaints the terminal, an OSC sequence retitles it (even through a pipe into a log
viewer), BEL rings, CR overwrites the line before it, and bidirectional overrides reorder what a
reviewer reads. :func:`printable` spells each such character as ``\\xNN`` or ``\\uNNNN``.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0 controls (ESC, BEL, CR, LF, TAB, ...), DEL and C1 controls (CSI, OSC)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional marks, embeddings, overrides
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff]"  # lone surrogates (bytes that were not UTF-8)
)


def _spell(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control, bidi-override and separator character escaped; with
    ``newlines``, line feeds are kept (for a multi-line message) and everything else escaped."""
    if text.isprintable():
        return text
    if newlines:
        return "\n".join(_UNSAFE.sub(_spell, line) for line in text.split("\n"))
    return _UNSAFE.sub(_spell, text)
