"""The floor plan holds: no import cycles between deployctl's modules (layers are checked by lint-imports), no
function outside a click command over 8 parameters, no module over 450 lines, no getattr/hasattr probe where
protocols belong. ``python -m deployctl.devtools.floorplan`` is the check; these tests run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deployctl.devtools import floorplan


def test_deployctl_is_within_the_floor_plan_limits() -> None:
    done = subprocess.run([sys.executable, "-m", "deployctl.devtools.floorplan"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "import cycles: 0" in done.stdout and done.stdout.rstrip().endswith("ok: within every limit")


def test_the_cycle_finder_finds_a_cycle() -> None:
    imports = {"a": {"b"}, "b": {"a", "c"}, "c": set()}
    assert floorplan.cycles(imports) == [("a", "b")]


def test_the_check_fails_over_each_limit(tmp_path: Path) -> None:
    package = tmp_path / "deployctl"
    (package / "app").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "app" / "__init__.py").write_text("")
    (package / "app" / "wide.py").write_text(
        "import click\n\n"
        "def nine(a, b, c, d, e, f, g, h, i):\n    return getattr(a, 'pool', None)\n\n"
        "class Run:\n    def eight(self, a, b, c, d, e, f, g, h):\n        return hasattr(a, 'requests')\n\n"
        "@click.command()\ndef command(a, b, c, d, e, f, g, h, i, j):\n    pass\n"
        + "\n" * floorplan.MAX_LINES
    )
    report = floorplan.survey(package, graph={"deployctl.app.wide": {"deployctl.app"},
                                              "deployctl.app": {"deployctl.app.wide"}})
    assert [(f.name, f.parameters) for f in report.too_many_parameters] == [("nine", 9)]  # not self, not click
    assert list(report.too_long) == ["deployctl.app.wide"]
    assert [(p.call, p.line) for p in report.probes] == [("getattr", 4), ("hasattr", 8)]
    assert report.cycles == (("deployctl.app", "deployctl.app.wide"),)
    assert not report.ok
    text = floorplan.render(report)
    assert "OVER   9  deployctl.app.wide:3 nine" in text and text.endswith("FAILED: over a limit (see OVER above)")
