"""OpenAI-format CLIP weights: OpenAI archives' state dicts and open_clip mirrors both load."""

from __future__ import annotations

import pytest
import torch
from conftest import GOLDEN

from ovss_car.clip_model import load_clip
from ovss_car.zoo import WEIGHTS, openai_state_dict
from ovss_common.checkpoints import CheckpointError


def test_open_clip_layout_of_an_openai_model_converts(tmp_path):
    state = torch.load(GOLDEN / "cam_clip.pth", weights_only=True)
    mirrored = {
        k: v
        for k, v in state.items()
        if k not in ("input_resolution", "context_length", "vocab_size")
    }
    mirrored["attn_mask"] = torch.zeros(77, 77)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(mirrored, path)
    converted = openai_state_dict(path)
    assert "attn_mask" not in converted and "visual.proj" in converted
    reference = load_clip(GOLDEN / "cam_clip.pth").state_dict()
    for key, value in load_clip(path).state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_missing_keys_are_one_line(tmp_path):
    state = torch.load(GOLDEN / "cam_clip.pth", weights_only=True)
    del state["visual.proj"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"no visual\.proj"):
        load_clip(path)


def test_zoo_names_the_configs_models():
    assert set(WEIGHTS) == {"ViT-B/16", "ViT-L/14"}
    assert all(entry.url.startswith("https://huggingface.co/timm/") for entry in WEIGHTS.values())
