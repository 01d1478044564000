"""Every bundle config names its classes by full dotted ``_target_`` paths that import."""

import json
from pathlib import Path

import pytest
from monai.utils import optional_import

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
CONFIGS = sorted(BUNDLES.glob("*/configs/*.json"))


def _targets(node):
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_targets_are_full_dotted_paths_that_import(config):
    for target in _targets(json.loads(config.read_text())):
        module, _, name = target.rpartition(".")
        assert module, f"{config}: _target_ {target!r} is not a full dotted path"
        _, found = optional_import(module, name=name)
        assert found, f"{config}: _target_ {target!r} does not import"


def test_there_are_configs_to_check():
    assert len(CONFIGS) >= 20
