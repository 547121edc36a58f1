"""Our config files resolve to the released configs, key for key and value for value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ovss_san.config import get_config
from ovss_san.models import MODELS

MANIFESTS = Path(__file__).resolve().parent / "golden_full"


def _normalise(value):
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    return value


@pytest.mark.parametrize("name", sorted(MODELS.models))
def test_config_equals_the_released_one(name):
    released = json.loads((MANIFESTS / f"{name}.json").read_text())["config"]
    ours = yaml.safe_load(get_config(MODELS.entry(name).config).dump())
    assert _normalise(ours) == _normalise(released)


def test_overrides_and_unknown_keys(tmp_path):
    cfg = get_config(MODELS.entry("san_vit_b_16").config, ["MODEL.SAN.CLIP_RESOLUTION", "0.7"])
    assert cfg.MODEL.SAN.CLIP_RESOLUTION == 0.7
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  SAN:\n    NO_SUCH_KEY: 1\n")
    with pytest.raises(KeyError, match="NO_SUCH_KEY"):
        get_config(bad)
