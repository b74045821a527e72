"""`deployctl init`: the files of a new deploy repo, decided purely, then written without overwriting.

deployctl.yaml with commented defaults and a ``$schema`` line for the YAML language server,
``environments/<env>/``, CODEOWNERS from the approvers, and the CI workflow for GitHub, GitLab or Gitea.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from deployctl.errors import InvalidInputError
from deployctl.model.config import dns_label_problem, load_config
from deployctl.model.config.schema import SCHEMA_FILE, schema_text
from deployctl.rules import codeowners as co

SCHEMA_PATH = f".deployctl/{SCHEMA_FILE}"
CI_FILES = {"github": (".github/workflows/deployctl.yml", "github-actions.yml"),
            "gitlab": (".gitlab-ci.yml", "gitlab-ci.yml"),
            "gitea": (".gitea/workflows/deployctl.yml", "gitea-actions.yml")}


class ScaffoldError(InvalidInputError):
    """init would overwrite files, or was given names it cannot use."""


@dataclass(frozen=True)
class Scaffold:
    files: Mapping[str, str]  # repo-relative path -> text
    next_commands: tuple[str, ...]


def config_text(envs: Sequence[str], apps: Sequence[str], *, registry: str, approvers: Sequence[str],
                namespaces: Mapping[str, str] | None = None) -> str:
    """deployctl.yaml for a new repo: every default written out as a comment next to the key."""
    lines = [
        f"# yaml-language-server: $schema={SCHEMA_PATH}",
        "# deployctl.yaml: how the apps in environments/<env>/<app>.deploy map to images and clusters.",
        "# Every key is in docs/config.md; check with: deployctl validate --worktree",
        f"# The schema beside it is refreshed with: deployctl schema --out {SCHEMA_PATH}",
        "version: 1",
        "",
        "apps:" + ("" if apps else " {}    # e.g. web: {image: registry.example.com/shop/web}"),
    ]
    for app in apps:
        lines += [
            f"  {app}:",
            f"    image: {registry}/{app}    # the repository; the tag comes from the SHA",
            '    # tag: "{sha}"               # or "release-{short_sha}"',
            f"    # container: {app}          # the container to update",
            "    # depends_on: []             # apps that must be healthy first",
            "    # pin: digest                # digest: deploy image@sha256:...; tag: image:tag as is",
            "    # source: ../" + app + "            # the app's git repo, to check SHAs and list commits",
        ]
    lines += ["", "environments:" + ("" if envs else " {}")]
    for i, env in enumerate(envs):
        namespace = (namespaces or {}).get(env, env)
        lines += [f"  {env}:", f"    namespace: {namespace}    # the Kubernetes namespace", "    # context: my-cluster   # "
                  "kubeconfig context [default: the current one]"]
        lines.append(f"    requires: [{envs[i - 1]}]   # a SHA runs here only after it ran there" if i
                     else "    # requires: []")
        if approvers and i == len(envs) - 1:
            lines.append(f"    approvers: [{', '.join(repr(a) for a in approvers)}]   # reviewers of changes here")
        else:
            lines.append("    # approvers: ['@org/team']")
        lines += ["    # require_approval: false",
                  "    # freeze:",
                  "    #   - {from: 'Fri 16:00', until: 'Mon 08:00', timezone: Europe/Oslo, reason: Weekend}"]
    return "\n".join(lines) + "\n"


def plan_scaffold(*, envs: Sequence[str], apps: Sequence[str], registry: str, approvers: Sequence[str],
                  ci: str | None, repo_arg: str, namespaces: Mapping[str, str] | None = None) -> Scaffold:
    """What init writes (pure): the files and the three commands to run next."""
    for kind, names in (("environment", envs), ("app", apps)):
        for name in names:
            why = dns_label_problem(name)
            if why is not None:
                raise ScaffoldError(f"{kind} name {name!r} {why} (it must be a Kubernetes DNS-1123 label)")
    unknown = sorted(set(namespaces or {}) - set(envs))
    if unknown:
        raise ScaffoldError(f"--namespace names {', '.join(unknown)}, which is not one of the environments "
                            f"({', '.join(envs)})")
    text = config_text(envs, apps, registry=registry, approvers=approvers, namespaces=namespaces)
    config, problems = load_config(text.encode())
    errors = [p for p in problems if p.is_error]
    if config is None or errors:
        raise ScaffoldError(f"the options do not make a valid deployctl.yaml: {errors[0] if errors else ''}")
    fmt = co.GITLAB if ci == "gitlab" else co.GITHUB
    files = {"deployctl.yaml": text, SCHEMA_PATH: schema_text()}
    for env in envs:
        files[f"environments/{env}/README.md"] = (
            f"# {env}\n\nOne file per app: `<app>.deploy`, whose first line is the commit SHA to run here.\n")
    if co.entries(config):
        # Gitea reads CODEOWNERS (GitHub's syntax) from .gitea/, not .github/
        files[".gitea/CODEOWNERS" if ci == "gitea" else co.DEFAULT_PATHS[fmt]] = co.render_block(config, fmt)
    if ci is not None:
        path, template = CI_FILES[ci]
        files[path] = resources.files("deployctl").joinpath("scaffold", template).read_text(encoding="utf-8")
    repo = "" if repo_arg == "." else f" --repo {repo_arg}"
    first = f" --env {envs[0]}" if envs else ""
    where = "" if repo_arg == "." else f"-C {repo_arg} "
    commands = (f"deployctl validate{repo} --worktree",
                f"git {where}add -A && git {where}commit -m 'Deploy with deployctl'",
                f"deployctl plan{repo}{first}")
    return Scaffold(files=files, next_commands=commands)


def conflicts(root: Path, files: Mapping[str, str]) -> list[str]:
    """The files init would change: they exist with other content."""
    out = []
    for rel, text in files.items():
        path = root / rel
        if path.is_symlink() or (path.exists() and (not path.is_file() or path.read_text(errors="replace") != text)):
            out.append(rel)
    return out


def write_scaffold(root: Path, scaffold: Scaffold, *, force: bool) -> list[str]:
    """Write every file (nothing at all when one would be overwritten without ``force``); returns those written."""
    clashing = conflicts(root, scaffold.files)
    if clashing and not force:
        raise ScaffoldError(f"{root}: init would overwrite {', '.join(clashing)}; nothing was written. "
                            "Move them away or run deployctl init --force")
    written = []
    for rel, text in scaffold.files.items():
        path = root / rel
        if path.is_file() and not path.is_symlink() and path.read_text(errors="replace") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(text, encoding="utf-8")
        written.append(rel)
    return written

