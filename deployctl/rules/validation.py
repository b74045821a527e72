"""The rules that turn a deploy repo's files into a DesiredState. Pure: both readers (a git commit
and the work tree) list what they found as RepoEntry values and call :func:`build_desired_state`,
so every rule lives here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from deployctl.model.config import CONFIG_PATH, Config, dns_label_problem, load_config, show
from deployctl.model.limits import DEFAULT_LIMITS, ReadLimits
from deployctl.model.problem import ERROR, WARNING, Problem
from deployctl.model.state import DesiredState, Target
from deployctl.rules.deployfile import (
    DEPLOY_SUFFIX,
    ENVIRONMENTS_DIR,
    name_problems,
    parse_deploy_file,
    quick_sha,
)
from deployctl.rules.reach import shared_targets

FILE = "file"
DIR = "dir"
SYMLINK = "symlink"
SUBMODULE = "submodule"
OTHER = "other"

_LAYOUT = "deploy files live at environments/<env>/<app>.deploy"


class RepoEntry(NamedTuple):
    """One path the reader found. ``data`` is set for files it read; ``size`` when it knows it.

    A NamedTuple rather than a dataclass: readers make 10,000 of these per read.
    """

    path: str
    kind: str = FILE  # "file" | "dir" | "symlink" | "submodule" | "other"
    data: bytes | None = None
    size: int | None = None


def shared_target_problems(config: Config) -> list[Problem]:
    """Environments that name the same context + namespace (contexts as written; reconcile checks them again
    once the current context is known): refused, so one cannot bypass another's freeze and approval rules."""
    shared = shared_targets({name: (env.context, env.namespace) for name, env in config.environments.items()})
    return [Problem(config.path, config.lines.get(f"environments.{env}"), reason.split(": ", 1)[1], ERROR, env=env)
            for env, reason in sorted(shared.items())]


def _entries(files: Mapping[str, bytes] | Iterable[RepoEntry]) -> Iterable[RepoEntry]:
    if isinstance(files, Mapping):
        return [RepoEntry(path, FILE, data, len(data)) for path, data in files.items()]
    return files


def build_desired_state(
    config_bytes: bytes | RepoEntry | None,
    files: Mapping[str, bytes] | Iterable[RepoEntry],
    *,
    ref: str,
    commit: str | None,
    config_path: str = CONFIG_PATH,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> DesiredState:
    """Apply every rule to a repo's config and files (paths relative to the repo root).

    ``files`` is either ``{path: bytes}`` (every path a regular file; folders implied) or
    RepoEntry values that also say what a path is (folder, symlink, submodule). Paths outside
    ``environments/`` are ignored. Never raises on untrusted content. ``limits`` are the sizes the reader applied: a file it
    left unread for its size is an error saying so.
    """
    problems: list[Problem] = []
    config: Config | None = None
    if isinstance(config_bytes, RepoEntry):
        entry, config_bytes = config_bytes, None
        if entry.kind != FILE:
            problems.append(Problem(config_path, None, f"is a {entry.kind}; commit a regular file"))
        elif entry.data is None:
            problems.append(
                Problem(config_path, None, f"is {entry.size} bytes; the limit is {limits.config_bytes} bytes")
            )
        else:
            config_bytes = entry.data
    if isinstance(config_bytes, bytes):
        config, config_problems = load_config(config_bytes, path=config_path, max_bytes=limits.config_bytes)
        problems.extend(config_problems)
        if config is not None:
            problems.extend(shared_target_problems(config))
    elif not problems:
        problems.append(
            Problem(config_path, None, "is missing; create it at the repo root (see docs/config.md)")
        )

    env_folders: dict[str, str] = {}  # env -> folder path, for folders seen
    deploy_entries: list[tuple[str, str, RepoEntry]] = []
    reported: set[str] = set()

    def once(path: str, message: str, *, env: str | None = None, app: str | None = None) -> None:
        if path not in reported:
            reported.add(path)
            problems.append(Problem(path, None, message, ERROR, env=env, app=app))

    saw_root = False
    for entry in _entries(files):
        parts = entry.path.split("/")
        if parts[0] != ENVIRONMENTS_DIR:
            continue
        saw_root = True
        if len(parts) == 1:
            if entry.kind != DIR:
                once(entry.path, f"is a {entry.kind}, not a folder; {_LAYOUT}")
            continue
        env = parts[1]
        folder = f"{ENVIRONMENTS_DIR}/{env}"
        if len(parts) == 2:
            if entry.kind == DIR:
                env_folders.setdefault(env, folder)
            elif entry.kind in (SYMLINK, SUBMODULE):
                once(folder, f"is a {entry.kind}; environment folders must be real folders", env=env)
            continue  # other files directly under environments/ are ignored
        env_folders.setdefault(env, folder)
        if len(parts) > 3 or entry.kind == DIR:
            nested = "/".join(parts[:3])
            once(nested, f"is a nested folder; {_LAYOUT} (move its files up or delete it)", env=env)
            continue
        name = parts[2]
        if entry.kind in (SYMLINK, SUBMODULE, OTHER):
            app = name[: -len(DEPLOY_SUFFIX)] if name.endswith(DEPLOY_SUFFIX) else None
            once(
                entry.path,
                f"is a {entry.kind}; only regular files are allowed under environments/",
                env=env,
                app=app,
            )
            continue
        if not name.endswith(DEPLOY_SUFFIX):
            continue  # notes, READMEs and the like are ignored
        deploy_entries.append((env, name[: -len(DEPLOY_SUFFIX)], entry))

    if not saw_root:
        problems.append(
            Problem(
                ENVIRONMENTS_DIR, None, f"no environments/ folder; nothing to deploy ({_LAYOUT})", WARNING
            )
        )

    usable_envs: set[str] = set()
    for env, folder in sorted(env_folders.items()):
        why = dns_label_problem(env)
        if why is not None:
            problems.append(
                Problem(
                    folder,
                    None,
                    f"environment folder {show(env)} {why} (it must be a DNS-1123 label); rename it",
                    env=env,
                )
            )
        elif config is not None and env not in config.environments and env not in config.invalid_environments:
            problems.append(
                Problem(
                    folder,
                    None,
                    f"environment {show(env)} has no entry under environments: in "
                    f"{config.path}; add one (with its namespace) or remove the folder",
                    env=env,
                )
            )
        else:
            usable_envs.add(env)

    targets: list[Target] = []
    good_app_names: set[str] = set(config.apps) if config is not None else set()
    for env, app, entry in deploy_entries:
        path = entry.path
        if env not in usable_envs:
            continue  # the folder problem above covers its files
        if app not in good_app_names:
            naming = name_problems(path, env, app)
            if naming:
                problems.extend(naming)
                continue
            good_app_names.add(app)
        if entry.size is not None and entry.size > limits.deploy_file_bytes:
            problems.append(
                Problem(
                    path,
                    1,
                    f"is {entry.size} bytes; deploy files are limited to {limits.deploy_file_bytes} "
                    "bytes (keep the SHA and a short history)",
                    env=env,
                    app=app,
                )
            )
            continue
        if entry.data is None:
            problems.append(Problem(path, None, "could not be read", env=env, app=app))
            continue
        sha = quick_sha(entry.data)
        line = 1
        if sha is None:
            parsed = parse_deploy_file(entry.data, path=path, env=env, app=app, max_bytes=limits.deploy_file_bytes)
            problems.extend(parsed.problems)
            sha, line = parsed.sha, parsed.line
        if config is None or sha is None:
            continue
        env_config = config.environments.get(env)
        app_config = config.apps.get(app)
        if env_config is None:  # env is in config.invalid_environments
            problems.append(
                Problem(
                    path,
                    line,
                    f"not deployable: environment {show(env)} has errors in {config.path}; fix those first",
                    env=env,
                    app=app,
                )
            )
            continue
        if app_config is None:
            if app in config.invalid_apps:
                message = f"not deployable: app {show(app)} has errors in {config.path}; fix those first"
            else:
                message = (
                    f"app {show(app)} has no entry under apps: in {config.path}; add it (with its image) "
                    "or remove this file"
                )
            problems.append(Problem(path, line, message, env=env, app=app))
            continue
        targets.append(
            Target(
                env=env,
                app=app,
                sha=sha,
                image=app_config.image_ref(sha),
                namespace=env_config.namespace,
                container=app_config.container,
                path=path,
                line=line,
                depends_on=app_config.depends_on,
                context=env_config.context,
            )
        )

    if config is not None:
        present = {(t.env, t.app) for t in targets} | {(env, app) for env, app, _ in deploy_entries}
        for t in targets:
            for dep in t.depends_on:
                if (t.env, dep) not in present:
                    problems.append(
                        Problem(
                            t.path,
                            t.line,
                            f"{t.app} depends on {dep}, which has no deploy file in "
                            f"{t.env}; add environments/{t.env}/{dep}.deploy or drop the dependency",
                            WARNING,
                            env=t.env,
                            app=t.app,
                        )
                    )

    targets.sort(key=lambda t: (t.env, t.app))
    problems.sort(key=lambda p: (p.path, p.line or 0))
    return DesiredState(
        config=config, targets=tuple(targets), problems=tuple(problems), ref=ref, commit=commit
    )


def drop_targets(state: DesiredState, problems: Iterable[Problem]) -> DesiredState:
    """A copy of ``state`` with more problems; targets named by an error among them are removed."""
    added = list(problems)
    if not added:
        return state
    bad = {(p.env, p.app) for p in added if p.severity == ERROR}
    merged = sorted([*state.problems, *added], key=lambda p: (p.path, p.line or 0))
    return DesiredState(
        config=state.config,
        targets=tuple(t for t in state.targets if (t.env, t.app) not in bad),
        problems=tuple(merged),
        ref=state.ref,
        commit=state.commit,
    )
