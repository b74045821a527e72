"""Build Gitea from Go modules, cached under ``$DEPLOYCTL_CACHE``/gitea/<key>.

``go install`` refuses modules whose go.mod has ``replace`` directives, and Gitea's has some, so a
small wrapper module requires ``code.gitea.io/gitea`` at the pin and copies Gitea's own ``replace``
lines. The web assets are not built: the server is run headless (API only), its templates and
static files come from the module directory (``STATIC_ROOT_PATH``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from deployctl.devtools.gitea import pins
from deployctl.devtools.localcluster.build import cache_root
from deployctl.errors import LocalClusterError

log = structlog.get_logger(__name__)

_GO_LINE = re.compile(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$", re.M)


@dataclass(frozen=True)
class GiteaBuild:
    """Where one pinned Gitea build lives: the binary and the module directory its templates come from."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "gitea"

    @property
    def module_dir(self) -> Path:
        """Gitea's source in the Go module cache (templates, options, public); recorded at build time."""
        return Path((self.root / "module-dir").read_text().strip())

    def complete(self) -> bool:
        marker = self.root / "module-dir"
        return os.access(self.binary, os.X_OK) and marker.is_file() and self.module_dir.is_dir()


def current() -> GiteaBuild:
    """The build for the current pins (it may not be built yet)."""
    return GiteaBuild(cache_root() / "gitea" / pins.cache_key())


def replace_lines(gitea_gomod: str) -> list[str]:
    """Gitea's own ``replace`` directives, single-line and block form, as single lines."""
    lines: list[str] = []
    in_block = False
    for raw in gitea_gomod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
            elif line:
                lines.append(f"replace {line}")
        elif line.startswith("replace ("):
            in_block = True
        elif line.startswith("replace "):
            lines.append(line)
    return lines


def generated_gomod(gitea_gomod: str) -> str:
    """The go.mod of the wrapper module that builds Gitea at the pin."""
    found = _GO_LINE.search(gitea_gomod)
    go_directive = found.group(1) if found else "1.25"
    lines = ["module deployctl.local/gitea", "", f"go {go_directive}", "", f"require {pins.MODULE} {pins.GITEA}", ""]
    lines += replace_lines(gitea_gomod)
    return "\n".join(lines) + "\n"


def _go(args: list[str], *, cwd: Path, env: dict[str, str], logfile: Path) -> subprocess.CompletedProcess[str]:
    go = shutil.which("go")
    if go is None:
        raise LocalClusterError("the Go toolchain is not on PATH; install Go >= 1.25 to build Gitea for the tests")
    started = time.monotonic()
    with logfile.open("a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run([go, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
    log.info("gitea.go", args=" ".join(args), seconds=round(time.monotonic() - started, 1))
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-20:]
        raise LocalClusterError(
            f"'go {' '.join(args)}' failed (exit {proc.returncode}); see {logfile}:\n" + "\n".join(tail)
        )
    return proc


def build(*, force: bool = False) -> GiteaBuild:
    """Build (or reuse) the pinned Gitea; returns where it is."""
    target = current()
    if target.complete() and not force:
        log.info("gitea.cached", binary=str(target.binary))
        return target
    src = target.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    logfile = target.root / "build.log"
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["CGO_ENABLED"] = "1"
    started = time.monotonic()

    info = json.loads(_go(["mod", "download", "-json", f"{pins.MODULE}@{pins.GITEA}"],
                          cwd=src, env=env, logfile=logfile).stdout)
    (src / "go.mod").write_text(generated_gomod(Path(info["GoMod"]).read_text()))
    (src / "go.sum").unlink(missing_ok=True)
    (src / "main.go").unlink(missing_ok=True)
    _go(["get", f"{pins.MODULE}@{pins.GITEA}"], cwd=src, env=env, logfile=logfile)
    partial = target.root / "gitea.partial"
    _go(["build", "-trimpath", "-tags", pins.TAGS,
         "-ldflags", f"-s -w -X main.Version={pins.GITEA.lstrip('v')} -X 'main.Tags={pins.TAGS}'",
         "-o", str(partial), pins.MODULE], cwd=src, env=env, logfile=logfile)
    target.binary.parent.mkdir(parents=True, exist_ok=True)
    partial.replace(target.binary)
    (target.root / "module-dir").write_text(info["Dir"] + "\n")
    (target.root / "pins.json").write_text(json.dumps(pins.as_dict(), indent=2) + "\n")
    log.info("gitea.built", binary=str(target.binary), seconds=round(time.monotonic() - started, 1))
    return target


def main() -> None:
    started = time.monotonic()
    built = build()
    print(f"{built.binary} ({time.monotonic() - started:.1f}s)")  # noqa: T201


if __name__ == "__main__":
    main()
