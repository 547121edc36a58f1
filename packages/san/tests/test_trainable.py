"""What SAN's training updated: the parameters left trainable by the model builder, counted
against the numbers recorded from the original build (``golden_full/<model>.json``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from ovss_san.build import build_san
from ovss_san.config import get_config
from ovss_san.models import MODELS

MANIFESTS = Path(__file__).resolve().parent / "golden_full"


@pytest.mark.parametrize("name", sorted(MODELS.models))
def test_trainable_parameters_match_the_original_build(name):
    recorded = json.loads((MANIFESTS / f"{name}.json").read_text())["trainable_parameters"]
    config = MODELS.entry(name).config
    with torch.device("meta"):
        model = build_san(get_config(config), config.parent)
    trainable = {key: p for key, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == recorded["count"]
    per_prefix = Counter()
    for key, parameter in trainable.items():
        per_prefix[key.split(".")[0]] += parameter.numel()
    assert dict(per_prefix) == recorded["per_prefix"]
    clip_trainable = sorted(key for key in trainable if not key.startswith("side_adapter_network."))
    assert clip_trainable == sorted(recorded["clip_parameters_left_trainable"])


def test_all_in_the_exclude_list_keeps_the_clip_extractor_trainable():
    config = MODELS.entry().config
    cfg = get_config(config, ["MODEL.SAN.CLIP_FROZEN_EXCLUDE", "['all']"])
    with torch.device("meta"):
        model = build_san(cfg, config.parent)
    extractor = dict(model.clip_visual_extractor.named_parameters())
    assert extractor and all(p.requires_grad for p in extractor.values())
    assert not any(p.requires_grad for p in model.clip_rec_head.parameters())
