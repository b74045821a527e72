"""deployctl.yaml: how apps map to images and environments to clusters. Pure: bytes in, typed values out.

``values`` holds the config model (frozen dataclasses and name rules), ``strict_yaml`` the hardened
YAML reader, ``load`` and ``environments`` the validation that turns a file into a :class:`Config`.
"""

from deployctl.model.config.fields import APP_KEYS, ENV_KEYS, FREEZE_KEYS, TOP_KEYS
from deployctl.model.config.load import load_config
from deployctl.model.config.strict_yaml import decode_text
from deployctl.model.config.values import (
    APPROVER,
    CONFIG_PATH,
    CONFIG_VERSION,
    DNS_LABEL,
    IMAGE_REPOSITORY,
    IMAGE_TAG,
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    PIN_MODES,
    AppConfig,
    Config,
    EnvironmentConfig,
    FreezeWindow,
    RecurringFreeze,
    dns_label_problem,
    find_cycle,
    is_dns_label,
    show,
)

__all__ = [
    "APPROVER", "APP_KEYS", "CONFIG_PATH", "CONFIG_VERSION", "DNS_LABEL", "ENV_KEYS", "FREEZE_KEYS",
    "IMAGE_REPOSITORY", "IMAGE_TAG", "MAX_CONFIG_BYTES", "MAX_YAML_DEPTH", "PIN_MODES", "TOP_KEYS",
    "AppConfig", "Config", "EnvironmentConfig", "FreezeWindow", "RecurringFreeze", "decode_text", "dns_label_problem",
    "find_cycle", "is_dns_label", "load_config", "show",
]
