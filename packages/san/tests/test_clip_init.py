"""Training from OpenAI's CLIP: an OpenAI-format state dict lands in SAN's three CLIP parts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovss_common.checkpoints import CheckpointError
from ovss_common.openai_clip import openai_state_dict
from ovss_san.build import build_san
from ovss_san.clip import build_clip
from ovss_san.config import get_config
from ovss_san.training.clip_init import initialise_from_openai, load_clip_weights

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture()
def tiny_clip_file(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny CLIP's weights in OpenAI's key layout (open_clip keeps OpenAI's names), saved as
    a bare state dict."""
    cfg = get_config(GOLDEN / "config.yaml")
    torch.manual_seed(5)
    clip = build_clip(cfg.MODEL.SAN.CLIP_MODEL_NAME, None, GOLDEN)
    state = {k: v for k, v in clip.state_dict().items() if not k.endswith("attn_mask")}
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    return path, state


def test_openai_keys_fill_every_clip_tensor_and_leave_the_side_adapter(tiny_clip_file):
    path, state = tiny_clip_file
    cfg = get_config(GOLDEN / "config.yaml")
    torch.manual_seed(0)
    model = build_san(cfg, GOLDEN)
    side_before = {k: v.clone() for k, v in model.side_adapter_network.state_dict().items()}
    bg_before = model.ov_classifier.bg_embed.detach().clone()
    load_clip_weights(model, openai_state_dict(path), path)
    first = cfg.MODEL.SAN.FEATURE_LAST_LAYER_IDX
    ours = model.state_dict()
    expected = {
        "clip_visual_extractor.conv1.weight": "visual.conv1.weight",
        "clip_visual_extractor.positional_embedding": "visual.positional_embedding",
        "clip_visual_extractor.class_embedding": "visual.class_embedding",
        "clip_visual_extractor.ln_pre.weight": "visual.ln_pre.weight",
        "clip_visual_extractor.resblocks.0.attn.in_proj_weight": (
            "visual.transformer.resblocks.0.attn.in_proj_weight"
        ),
        f"clip_visual_extractor.resblocks.{first - 1}.mlp.c_proj.weight": (
            f"visual.transformer.resblocks.{first - 1}.mlp.c_proj.weight"
        ),
        "clip_rec_head.resblocks.0.ln_1.weight": f"visual.transformer.resblocks.{first}.ln_1.weight",
        "clip_rec_head.ln_post.bias": "visual.ln_post.bias",
        "clip_rec_head.proj": "visual.proj",
        "ov_classifier.token_embedding.weight": "token_embedding.weight",
        "ov_classifier.transformer.resblocks.3.attn.out_proj.weight": (
            "transformer.resblocks.3.attn.out_proj.weight"
        ),
        "ov_classifier.text_projection": "text_projection",
        "ov_classifier.logit_scale": "logit_scale",
    }
    for san_key, openai_key in expected.items():
        assert torch.equal(ours[san_key], state[openai_key]), san_key
    for key, value in model.side_adapter_network.state_dict().items():
        assert torch.equal(value, side_before[key]), key
    assert torch.equal(model.ov_classifier.bg_embed, bg_before)


def test_another_architecture_is_refused_in_one_line(tiny_clip_file):
    path, state = tiny_clip_file
    model = build_san(get_config(GOLDEN / "config.yaml"), GOLDEN)
    broken = dict(state)
    broken["visual.proj"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"visual|clip_rec_head.proj") as error:
        load_clip_weights(model, broken, path)
    assert "\n" not in str(error.value)
    del broken["visual.ln_post.bias"]
    with pytest.raises(CheckpointError, match=r"no weights for clip_rec_head\.ln_post\.bias"):
        load_clip_weights(model, broken, path)


def test_a_clip_that_is_not_openais_needs_weights():
    cfg = get_config(GOLDEN / "config.yaml")
    model = build_san(cfg, GOLDEN)
    with pytest.raises(CheckpointError, match="pass --weights"):
        initialise_from_openai(model, cfg)
