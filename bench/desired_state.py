"""Benchmark: read and validate the desired state of a 10,000-file deploy repo from a commit.

Builds a bare repo with 3,334 apps x 3 environments (10,002 deploy files, each with a short
history) in a temporary folder, then times ``read_desired_state(repo, ref="main")``.
Target: <= 0.3 s. Run: .venv/bin/python bench/desired_state.py
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployctl.edges.git.repo import read_desired_state  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402

APPS = 3334
ENVS = ("dev", "staging", "production")
RUNS = 7


def sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def build(path: Path) -> None:
    repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
    lines = ["version: 1", "apps:"]
    for i in range(APPS):
        lines += [f"  app-{i:04d}:", f"    image: registry.example.com/shop/app-{i:04d}"]
        if i % 10:
            lines.append(f"    depends_on: [app-{i - i % 10:04d}]")
    lines.append("environments:")
    for env in ENVS:
        lines += [f"  {env}:", f"    namespace: shop-{env}"]
    config = ("\n".join(lines) + "\n").encode()

    envs_tree = repo.TreeBuilder()
    for env in ENVS:
        env_tree = repo.TreeBuilder()
        for i in range(APPS):
            body = "".join(f"{sha(env, i, n)}\n* change {n} of app {i}\n" for n in range(3))
            env_tree.insert(f"app-{i:04d}.deploy", repo.create_blob(body.encode()), pygit2.GIT_FILEMODE_BLOB)
        envs_tree.insert(env, env_tree.write(), pygit2.GIT_FILEMODE_TREE)
    root = repo.TreeBuilder()
    root.insert("deployctl.yaml", repo.create_blob(config), pygit2.GIT_FILEMODE_BLOB)
    root.insert("environments", envs_tree.write(), pygit2.GIT_FILEMODE_TREE)
    who = pygit2.Signature("bench", "bench@example.com", 1717405200, 0)
    repo.create_commit("refs/heads/main", who, who, "bench\n", root.write(), [])


def main() -> None:
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deploy.git"
        started = time.perf_counter()
        build(path)
        built = time.perf_counter() - started
        timings = []
        state = None
        for _ in range(RUNS):
            started = time.perf_counter()
            state = read_desired_state(path, ref="main")
            timings.append(time.perf_counter() - started)
        assert state is not None and state.ok, state.problems[:3] if state else None
        assert len(state.targets) == APPS * len(ENVS)
        print(
            f"repo: {len(state.targets)} deploy files ({APPS} apps x {len(ENVS)} envs), "
            f"built in {built:.1f} s"
        )
        print(
            f"read+validate desired state from a commit: median {statistics.median(timings):.3f} s, "
            f"best {min(timings):.3f} s, first {timings[0]:.3f} s over {RUNS} runs (target <= 0.3 s)"
        )


if __name__ == "__main__":
    main()
