"""Builders: an OVSeg model from a config file and a released-layout checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode

from ovss_common.checkpoints import CheckpointError, load_state_dict_strictly, read_state_dict
from ovss_ovseg.config import get_config
from ovss_ovseg.ovseg import OVSeg

#: Keys of the released files that inference does not use (the training criterion's weights).
TRAINING_ONLY_KEYS = ("criterion.empty_weight",)
#: Where the fine-tuned CLIP lives inside an OVSeg checkpoint.
CLIP_PREFIX = "clip_adapter.clip_model."


def clip_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The OpenAI-format CLIP weights inside an OVSeg state dict (without mask prompts)."""
    return {
        key[len(CLIP_PREFIX) :]: value
        for key, value in state.items()
        if key.startswith(CLIP_PREFIX) and key != f"{CLIP_PREFIX}visual.mask_embedding"
    }


def build_ovseg(cfg: CfgNode, clip_weights: dict[str, torch.Tensor] | None = None) -> OVSeg:
    """An OVSeg with random weights on the CPU; the CLIP geometry comes from ``clip_weights``
    (OpenAI-format) when given, else from the config's ``CLIP_MODEL_NAME``."""
    return OVSeg(cfg, clip_state=clip_weights).eval()


def load_ovseg(
    config: str | Path,
    weights: str | Path | None,
    device: str | torch.device = "cpu",
    overrides: list[str] | None = None,
) -> tuple[OVSeg, CfgNode]:
    """Build the model of ``config`` (plus overrides) and load a released-layout checkpoint
    (None keeps random weights; then ``CLIP_MODEL_NAME`` must name a known OpenAI CLIP)."""
    cfg = get_config(config, overrides)
    if weights is None:
        return build_ovseg(cfg).to(device), cfg
    state = read_state_dict(weights)
    clip_weights = clip_state(state)
    if not clip_weights:
        raise CheckpointError(f"{weights}: not an OVSeg checkpoint: no {CLIP_PREFIX}* weights")
    try:
        model = build_ovseg(cfg, clip_weights)
    except KeyError as exc:
        raise CheckpointError(f"{weights}: the CLIP inside lacks {exc}") from None
    load_state_dict_strictly(model, state, weights, "OVSeg", TRAINING_ONLY_KEYS)
    return model.to(device), cfg
