"""The reconcile progress display: one line per change in CI, a redrawn block on a terminal."""

from __future__ import annotations

import io
import re

from deployctl.cli.reconcile import ProgressPrinter
from deployctl.reconcile.outcome import Progress


def test_ci_gets_one_timestamped_line_per_state_change():
    out = io.StringIO()
    p = ProgressPrinter(out, live=False)
    p(Progress("staging", "api", "applying", "- -> img:1"))
    p(Progress("staging", "api", "succeeded", "deployment/api: 1/1 replicas available"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\d\d:\d\d:\d\dZ staging/api: applying - -> img:1", lines[0])
    assert lines[1].endswith("staging/api: succeeded deployment/api: 1/1 replicas available")


def test_a_terminal_gets_a_block_redrawn_in_place_with_counts():
    out = io.StringIO()
    p = ProgressPrinter(out, live=True)
    p(Progress("staging", "api", "applying"))
    p(Progress("staging", "web", "applying"))
    p(Progress("staging", "api", "succeeded", "ok"))
    text = out.getvalue()
    assert "\x1b[2F" in text  # the second draw moves back over the first block (2 lines)
    last = text.rsplit("\x1b[3F", 1)[-1]  # the third draw replaces the 3-line block
    assert "staging/api: succeeded ok" in last and "staging/web: applying" in last
    assert "applying: 1  succeeded: 1" in last
