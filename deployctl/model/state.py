"""The desired state of a deploy repo at one ref: targets and the problems found. Pure data, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deployctl.model.config import Config
from deployctl.model.problem import ERROR, Problem


@dataclass(frozen=True)
class Target:
    """One app in one environment that should run one commit, and where that is written down."""

    env: str
    app: str
    sha: str
    image: str  # full image reference "<image>:<tag>"
    namespace: str
    container: str
    path: str  # repo-relative deploy file path
    line: int
    depends_on: tuple[str, ...]
    context: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.env, self.app)

    def as_dict(self) -> dict[str, object]:
        return {
            "env": self.env,
            "app": self.app,
            "sha": self.sha,
            "image": self.image,
            "namespace": self.namespace,
            "container": self.container,
            "path": self.path,
            "line": self.line,
            "depends_on": list(self.depends_on),
            "context": self.context,
        }


@dataclass(frozen=True)
class DesiredState:
    """What the deploy repo asks for at ``ref``: the valid targets and every problem found."""

    config: Config | None
    targets: tuple[Target, ...]  # valid targets only, sorted by (env, app)
    problems: tuple[Problem, ...]
    ref: str
    commit: str | None  # resolved deploy-repo commit; None when read from the work tree

    @property
    def ok(self) -> bool:
        """True when there is no error-severity problem (warnings allowed)."""
        return not any(p.severity == ERROR for p in self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == ERROR)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity != ERROR)

    def invalid(self) -> set[tuple[str, str]]:
        """(env, app) pairs that have error problems and therefore no Target."""
        valid = {t.key for t in self.targets}
        return {
            (p.env, p.app)
            for p in self.problems
            if p.severity == ERROR and p.env is not None and p.app is not None and (p.env, p.app) not in valid
        }

    def target(self, env: str, app: str) -> Target | None:
        for t in self.targets:
            if t.env == env and t.app == app:
                return t
        return None

    def environments(self) -> tuple[str, ...]:
        """Environments that have at least one valid target, sorted."""
        return tuple(sorted({t.env for t in self.targets}))

    def named_environments(self) -> tuple[str, ...]:
        """Every environment a run without ``--env`` covers, sorted: the config's, and those whose deploy
        files are invalid (an environment with config errors is not in the config, but its files still are
        targets that must be reported as skipped, never silently left out)."""
        named = set(self.config.environments) if self.config else set()
        return tuple(sorted(named | {env for env, _ in self.invalid()}))

    def unrowed_errors(self, envs: Sequence[str] = (), apps: Sequence[str] = ()) -> tuple[Problem, ...]:
        """The errors of a selection (empty: all) that no (env, app) row reports: config-wide errors, an
        environment's or an app's own. Invalid input all the same (exit 2)."""
        return tuple(p for p in self.errors
                     if (p.env is None or p.app is None)
                     and (p.env is None or not envs or p.env in envs)
                     and (p.app is None or not apps or p.app in apps))

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "ref": self.ref,
            "commit": self.commit,
            "targets": [t.as_dict() for t in self.targets],
            "problems": [p.as_dict() for p in self.problems],
        }
