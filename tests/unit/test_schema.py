"""The JSON Schema of deployctl.yaml: generated from the config model, shipped fresh, and in
agreement with `deployctl validate` (never rejecting what validate accepts)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from deployctl.model.config import load_config
from deployctl.model.config.schema import SCHEMA_FILE, json_schema, schema_problems, schema_text
from deployctl.model.config.strict_yaml import Rejected
from tests.unit.test_config import FULL
from tests.unit.test_freeze import RECURRING
from tests.unit.test_hostile_corpus import CASES, CONFIG

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (ROOT / "deployctl" / "schema" / SCHEMA_FILE, ROOT / "docs" / SCHEMA_FILE)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_shipped_schema_is_the_generated_one(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == schema_text(), "run: deployctl schema --out " + str(path)


def test_the_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema())


@pytest.mark.parametrize("data", [(ROOT / "deployctl.yaml").read_bytes(), FULL, RECURRING, CONFIG],
                         ids=["repo example", "every key", "recurring freezes", "corpus base"])
def test_valid_configs_pass_the_schema(data: bytes) -> None:
    config, problems = load_config(data)
    assert config is not None and not [p for p in problems if p.is_error]
    assert schema_problems(data) == []


def _config_cases() -> list[tuple[str, bytes]]:
    return [(c.name, c.config) for c in CASES if isinstance(c.config, bytes) and c.config != CONFIG]


@pytest.mark.parametrize(("name", "data"), _config_cases(), ids=[n for n, _ in _config_cases()])
def test_the_schema_never_rejects_what_validate_accepts(name: str, data: bytes) -> None:
    _, problems = load_config(data)
    validate_rejects = any(p.is_error for p in problems)
    try:
        schema_rejects = bool(schema_problems(data))
    except (Rejected, yaml.YAMLError, UnicodeDecodeError, ValueError, RecursionError):
        return  # not YAML the strict reader takes: validate's own verdict stands (checked above)
    assert validate_rejects or not schema_rejects, name


@pytest.mark.parametrize(("old", "new", "key"), [
    (b"{image:", b"{imgae:", "apps.web"),
    (b"namespace: shop-staging", b"namespace: shop_staging", "environments.staging.namespace"),
    (b"version: 1", b"version: 2", "version"),
    (b"shop/web,", b"shop/web:latest,", "apps.web.image"),
    (b"shop/api}", b"shop/api, pin: latest}", "apps.api.pin"),
])
def test_the_schema_rejects_bad_keys_and_values_like_validate(old: bytes, new: bytes, key: str) -> None:
    data = CONFIG.replace(old, new, 1)
    assert data != CONFIG
    _, problems = load_config(data)
    assert any(p.is_error for p in problems)
    found = schema_problems(data)
    assert found and found[0].message.startswith(f"{key}") and found[0].line is not None


def test_schema_lists_every_key_the_loader_accepts() -> None:
    from deployctl.model.config import APP_KEYS, ENV_KEYS, FREEZE_KEYS, TOP_KEYS

    doc = json.loads(schema_text())
    assert set(doc["properties"]) == set(TOP_KEYS)
    assert set(doc["$defs"]["app"]["properties"]) == set(APP_KEYS)
    assert set(doc["$defs"]["environment"]["properties"]) == set(ENV_KEYS)
    assert {k for f in doc["$defs"]["freeze"]["oneOf"] for k in f["properties"]} == set(FREEZE_KEYS)
