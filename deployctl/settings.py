"""Every ``DEPLOYCTL_*`` environment variable, in one place: its name, meaning and default.

The CLI (``envvar=``) and the library read variables through these objects only, and
docs/config.md lists each of them (a test fails when one is undocumented). Values, not I/O:
:meth:`Setting.get` reads the mapping it is given (``os.environ`` by default).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PREFIX = "DEPLOYCTL_"


@dataclass(frozen=True)
class Setting:
    """One environment variable (or, with ``family``, a set of them sharing a ``name`` prefix)."""

    name: str
    meaning: str
    default: str = ""  # how the default reads in the docs ("" = unset, nothing happens)
    secret: bool = False
    family: bool = False  # e.g. DEPLOYCTL_REGISTRY_<HOST>_USERNAME: ``name`` is the prefix

    def get(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The value, or None when unset or empty."""
        value = (os.environ if environ is None else environ).get(self.name)
        return value or None


LOG_LEVEL = Setting("DEPLOYCTL_LOG_LEVEL", "Level of the structured log on stderr (debug, info, warning, error); "
                    "the same as --log-level.", "error")
AUDIT = Setting("DEPLOYCTL_AUDIT", "Audit store URL (sqlite:///path/audit.db or postgresql://...); the same as "
                "--audit.", "sqlite:///~/.local/state/deployctl/audit.db")
AUDIT_KEY = Setting("DEPLOYCTL_AUDIT_KEY", "Key(s) of the audit chain's MACs (docs/audit.md#the-audit-chain), "
                    "separated by commas or spaces: the first signs the rows this process writes, all of them "
                    "verify (keep old keys after the current one through a rotation). A Kubernetes Secret for "
                    "`watch`, a CI secret for CI; never given to the database role. Unset: rows are written "
                    "without a MAC and `audit verify` reports them as unkeyed.", secret=True)
ALLOW_NAMESPACES = Setting("DEPLOYCTL_ALLOW_NAMESPACES", "`context/namespace` pairs deployctl may touch (a bare "
                           "namespace: in the current context only), separated by commas or spaces; environments "
                           "outside them are refused. The same as --allow-namespace.",
                           "every namespace")
SETTINGS_FILE = Setting("DEPLOYCTL_SETTINGS", "Controller settings YAML (notification sinks: `notify:`); the "
                        "same as --settings.")
MIRROR_DIR = Setting("DEPLOYCTL_MIRROR_DIR", "Where `watch` keeps its mirror of the deploy repo; the same as "
                     "--mirror-dir.", "~/.cache/deployctl/mirrors/<hash of the repo URL>/deploy.git")
SHARDS = Setting("DEPLOYCTL_SHARDS", "Slot Leases over which `watch` replicas share the apps (0: one leader does "
                 "all the work); the same as --shards.", "0")
GIT_TOKEN = Setting("DEPLOYCTL_GIT_TOKEN", "Token for fetching an https deploy repo in `watch`.", secret=True)
GIT_USERNAME = Setting("DEPLOYCTL_GIT_USERNAME", "User name sent with DEPLOYCTL_GIT_TOKEN.", "x-access-token")
GIT_FETCH_TIMEOUT = Setting("DEPLOYCTL_GIT_FETCH_TIMEOUT", "Total deadline of one fetch of the deploy repo in "
                              "`watch` (a duration).", "120s")
GIT_SSH_KEY = Setting("DEPLOYCTL_GIT_SSH_KEY", "ssh private key (a file path or the key itself) for an ssh deploy "
                      "repo in `watch`.", secret=True)
GIT_SSH_PASSPHRASE = Setting("DEPLOYCTL_GIT_SSH_PASSPHRASE", "Passphrase of DEPLOYCTL_GIT_SSH_KEY.", secret=True)
WEBHOOK_SECRET = Setting("DEPLOYCTL_WEBHOOK_SECRET", "Shared secret that signs push webhooks to `watch`; without "
                         "one every hook is refused.", secret=True)
WEBHOOK_SECRET_FILE = Setting("DEPLOYCTL_WEBHOOK_SECRET_FILE", "File holding the webhook secret (preferred over "
                              "DEPLOYCTL_WEBHOOK_SECRET); the same as --webhook-secret-file.")
ALLOWED_SIGNERS = Setting("DEPLOYCTL_ALLOWED_SIGNERS", "ssh allowed-signers file of the approvers' keys, to "
                          "verify signed approval commits.")
GPG_HOME = Setting("DEPLOYCTL_GPG_HOME", "GnuPG home holding only the approvers' public keys, to verify "
                   "GPG-signed approval commits.")
FORGE_TYPE = Setting("DEPLOYCTL_FORGE_TYPE", "The forge holding the deploy repo's pull requests, for "
                     "`require_approval: forge`: github, gitlab or gitea. A runner setting, never read from the repo.")
FORGE_URL = Setting("DEPLOYCTL_FORGE_URL", "The forge's base URL (https://github.com, a GitHub Enterprise or GitLab "
                    "URL, or a Gitea URL); https unless on loopback.")
FORGE_REPO = Setting("DEPLOYCTL_FORGE_REPO", "The deploy repo on the forge: owner/name, or the GitLab project path.")
FORGE_TOKEN = Setting("DEPLOYCTL_FORGE_TOKEN", "API token for the forge (read pull requests, reviews, team "
                      "members); sent to DEPLOYCTL_FORGE_URL's host only.", secret=True)
REGISTRY_USERNAME = Setting("DEPLOYCTL_REGISTRY_USERNAME", "Registry user for the one registry named by "
                            "DEPLOYCTL_REGISTRY_HOST (an error without it).")
REGISTRY_PASSWORD = Setting("DEPLOYCTL_REGISTRY_PASSWORD", "Password or token for DEPLOYCTL_REGISTRY_USERNAME.",
                            secret=True)
REGISTRY_ONE_HOST = Setting("DEPLOYCTL_REGISTRY_HOST", "The registry host[:port] DEPLOYCTL_REGISTRY_USERNAME/"
                            "PASSWORD belong to; they are sent nowhere else.")
REGISTRY_HOST = Setting("DEPLOYCTL_REGISTRY_", "Credentials for one registry; `<HOST>` is the host upper-cased "
                        "with every other character as `_` (`reg.example.com:5000` -> `REG_EXAMPLE_COM_5000`).",
                        secret=True, family=True)
CHROMIUM = Setting("DEPLOYCTL_CHROMIUM", "Chromium or Chrome binary for `timeline --out deploys.png`.",
                   "the first chromium/chrome on the PATH")
CACHE = Setting("DEPLOYCTL_CACHE", "Cache directory of the local control plane's binaries (`localcluster`).",
                "$XDG_CACHE_HOME/deployctl or ~/.cache/deployctl")

MAX_DEPLOY_FILE_BYTES = Setting("DEPLOYCTL_MAX_DEPLOY_FILE_BYTES", "Largest deploy file read; a bigger one is an "
                                "error naming it, and is never read.", "65536")
MAX_CONFIG_BYTES = Setting("DEPLOYCTL_MAX_CONFIG_BYTES", "Largest deployctl.yaml read; a bigger one is an error.",
                           "1048576")
SOURCE_ROOTS = Setting("DEPLOYCTL_SOURCE_ROOTS", "Folders an app's `source:` repo may be read from, separated by "
                       "`:` (a setting of the runner, never repo content); a `source` path that resolves, after "
                       "symlinks, outside all of them is an error and is never opened.",
                       "the deploy repo's parent folder")
MAX_HISTORY_COMMITS = Setting("DEPLOYCTL_MAX_HISTORY_COMMITS", "How many commits a history walk (promotion gates, "
                              "rollback) looks at, at most.", "10000")

UI_TOKEN = Setting("DEPLOYCTL_UI_TOKEN", "Bearer token the dashboard (`ui`, `watch`'s /ui/) requires on a "
                   "non-loopback listener.", secret=True)
UI_TOKEN_FILE = Setting("DEPLOYCTL_UI_TOKEN_FILE", "File holding the dashboard's bearer token (preferred over "
                        "DEPLOYCTL_UI_TOKEN); the same as --token-file / --ui-token-file.")
UI_TRUSTED_PROXIES = Setting("DEPLOYCTL_UI_TRUSTED_PROXIES", "Auth proxy addresses (ADDR[/BITS], comma- or "
                             "space-separated) whose X-Forwarded-User the dashboard believes.")

PROMETHEUS_URL = Setting("DEPLOYCTL_PROMETHEUS_URL", "Prometheus that verifies deploys (`verify:` checks), "
                         "http(s)://host:port[/prefix]; `user:password@` in it is basic auth for that host only. "
                         "Without it nothing is verified.")
PROMETHEUS_TOKEN = Setting("DEPLOYCTL_PROMETHEUS_TOKEN", "Bearer token sent to DEPLOYCTL_PROMETHEUS_URL only.",
                           secret=True)
PROMETHEUS_TIMEOUT = Setting("DEPLOYCTL_PROMETHEUS_TIMEOUT", "Total deadline of one Prometheus query of a "
                             "verification (a duration).", "10s")

COMPLETE = Setting("_DEPLOYCTL_COMPLETE", "Set by the completion scripts (`deployctl completion`) to ask for "
                   "completions; not for users.")

# Read by the example CI workflows (docs/ci/, `deployctl init --ci`), not by deployctl itself.
CI_GIT = Setting("DEPLOYCTL_GIT", "CI workflows: the git URL deployctl is installed from (never a package "
                 "index name).")
CI_COMMIT = Setting("DEPLOYCTL_COMMIT", "CI workflows: the full 40-hex deployctl commit to install and run.")
CI_ALLOWED_SIGNERS_DATA = Setting("DEPLOYCTL_ALLOWED_SIGNERS_DATA", "CI workflows: the allowed-signers file's "
                                  "content (a CI secret), written to a file for DEPLOYCTL_ALLOWED_SIGNERS.",
                                  secret=True)
CI_OVERRIDE_REASON = Setting("DEPLOYCTL_OVERRIDE_REASON", "CI workflows: a freeze-override reason passed to "
                             "`reconcile --override-freeze --reason`.")

SETTINGS: tuple[Setting, ...] = (
    UI_TOKEN, UI_TOKEN_FILE, UI_TRUSTED_PROXIES,
    MAX_DEPLOY_FILE_BYTES, MAX_CONFIG_BYTES, MAX_HISTORY_COMMITS, SOURCE_ROOTS,
    LOG_LEVEL, AUDIT, AUDIT_KEY, ALLOW_NAMESPACES, SETTINGS_FILE, MIRROR_DIR, SHARDS, GIT_TOKEN, GIT_USERNAME, GIT_FETCH_TIMEOUT, GIT_SSH_KEY,
    GIT_SSH_PASSPHRASE, WEBHOOK_SECRET, WEBHOOK_SECRET_FILE, ALLOWED_SIGNERS, GPG_HOME,
    FORGE_TYPE, FORGE_URL, FORGE_REPO, FORGE_TOKEN, REGISTRY_USERNAME,
    REGISTRY_PASSWORD, REGISTRY_ONE_HOST, REGISTRY_HOST, CHROMIUM, CACHE, PROMETHEUS_URL, PROMETHEUS_TOKEN,
    PROMETHEUS_TIMEOUT, COMPLETE, CI_GIT, CI_COMMIT, CI_ALLOWED_SIGNERS_DATA,
    CI_OVERRIDE_REASON,
)

_SEPARATORS = re.compile(r"[,\s]+")


def lookup(name: str) -> Setting | None:
    """The setting a variable name belongs to (a family matches by prefix), or None."""
    for setting in SETTINGS:
        if setting.name == name:
            return setting
    for setting in SETTINGS:
        if setting.family and (name + "_").startswith(setting.name):
            return setting
    return None


def split_names(values: Iterable[str]) -> list[str]:
    """Repeated option values, each comma- or space-separated, as one de-duplicated list in order.

    ``--env a,b --env c`` and ``DEPLOYCTL_ALLOW_NAMESPACES="a b,c"`` read the same way.
    """
    out: list[str] = []
    for value in values:
        for item in _SEPARATORS.split(value):
            if item and item not in out:
                out.append(item)
    return out
