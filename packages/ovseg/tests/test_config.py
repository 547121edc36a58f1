"""Our config files resolve to the released configs, key for key and value for value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ovss_ovseg.config import get_config
from ovss_ovseg.models import MODELS

MANIFESTS = Path(__file__).resolve().parent / "golden_full"
#: Keys the manifests' builds changed on purpose (no download, CPU, no init weights).
BUILD_OVERRIDES = (
    ("MODEL", "DEVICE"),
    ("MODEL", "WEIGHTS"),
    ("MODEL", "CLIP_ADAPTER", "CLIP_MODEL_NAME"),
)


def _without_build_overrides(config: dict) -> dict:
    for path in BUILD_OVERRIDES:
        node = config
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1])
    return json.loads(json.dumps(config))


@pytest.mark.parametrize("name", sorted(MODELS.models))
def test_config_equals_the_released_one(name):
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    released = _without_build_overrides(yaml.safe_load(manifest["resolved_config"]))
    ours = _without_build_overrides(yaml.safe_load(get_config(MODELS.entry(name).config).dump()))
    assert ours == released


def test_demo_config_differs_only_where_the_released_demo_does():
    entry = MODELS.entry("ovseg_swinbase_vitL14_ft_mpt")
    eval_cfg = get_config(entry.config_for("eval"))
    demo_cfg = get_config(entry.config_for("demo"))
    assert demo_cfg.MODEL.META_ARCHITECTURE == "OVSegDEMO"
    assert demo_cfg.MODEL.CLIP_ADAPTER.MASK_THR == 0.35
    assert demo_cfg.MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT == 0.0
    assert demo_cfg.MODEL.SWIN == eval_cfg.MODEL.SWIN
