"""The recipe's starting point: SAN's CLIP parts from OpenAI's released CLIP.

SAN trains from OpenAI's CLIP (``MODEL.SAN.CLIP_PRETRAINED_NAME openai``) with a freshly
initialised side adapter. A SAN model holds that CLIP sliced in three: the stem and the first
``FEATURE_LAST_LAYER_IDX`` image blocks (``clip_visual_extractor``), the remaining image
blocks with ``ln_post`` and ``proj`` (``clip_rec_head``), and the text tower
(``ov_classifier``). ``clip_state_for_san`` renames OpenAI's keys accordingly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode

from ovss_common.checkpoints import CheckpointError
from ovss_common.openai_clip import openai_state_dict, released_clip
from ovss_san.san import SAN

#: SAN's ``CLIP_MODEL_NAME`` -> OpenAI's name of the same released CLIP.
OPENAI_NAMES = {"ViT-B/16": "ViT-B/16", "ViT-L-14-336": "ViT-L/14@336px"}
#: SAN keys that are not CLIP's: the learned background and the text tower's causal mask.
NOT_FROM_CLIP = ("ov_classifier.bg_embed", "ov_classifier.attn_mask")
CLIP_PARTS = ("clip_visual_extractor.", "clip_rec_head.", "ov_classifier.")


def clip_state_for_san(
    state: dict[str, torch.Tensor], first_rec_block: int
) -> dict[str, torch.Tensor]:
    """OpenAI-format CLIP weights renamed to SAN's keys (image blocks from
    ``first_rec_block`` on go to the recognition head)."""
    renamed = {}
    blocks = "visual.transformer.resblocks."
    for key, value in state.items():
        if key.startswith(blocks):
            index, rest = key[len(blocks) :].split(".", 1)
            block = int(index)
            if block < first_rec_block:
                renamed[f"clip_visual_extractor.resblocks.{block}.{rest}"] = value
            else:
                renamed[f"clip_rec_head.resblocks.{block - first_rec_block}.{rest}"] = value
        elif key.startswith(("visual.ln_post.", "visual.proj")):
            renamed["clip_rec_head." + key.removeprefix("visual.")] = value
        elif key.startswith("visual."):
            renamed["clip_visual_extractor." + key.removeprefix("visual.")] = value
        elif isinstance(value, torch.Tensor):
            renamed["ov_classifier." + key] = value
    return renamed


def load_clip_weights(model: SAN, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Put OpenAI-format CLIP weights into ``model``'s CLIP parts; every CLIP tensor of the
    model must be given, with its shape. The side adapter and ``bg_embed`` keep their
    initialisation."""
    renamed = clip_state_for_san(state, model.clip_rec_head.first_layer_idx)
    expected = {
        key: value
        for key, value in model.state_dict().items()
        if key.startswith(CLIP_PARTS) and key not in NOT_FROM_CLIP
    }
    missing = sorted(set(expected) - set(renamed))
    if missing:
        raise CheckpointError(f"{source}: not this CLIP architecture (no weights for {missing[0]})")
    for key, value in expected.items():
        if tuple(renamed[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: {key} is {list(renamed[key].shape)}, the model's CLIP {list(value.shape)}"
            )
    model.load_state_dict({key: renamed[key] for key in expected}, strict=False)
    model.ov_classifier.clear_cache()


def initialise_from_openai(model: SAN, cfg: CfgNode) -> Path:
    """Load OpenAI's CLIP named by the config (fetched and checked through the zoo) into
    ``model``; returns the file used."""
    san = cfg.MODEL.SAN
    if san.CLIP_PRETRAINED_NAME != "openai" or san.CLIP_MODEL_NAME not in OPENAI_NAMES:
        raise CheckpointError(
            f"no initial weights: CLIP {san.CLIP_MODEL_NAME!r} ({san.CLIP_PRETRAINED_NAME}) is "
            f"not one of OpenAI's ({', '.join(OPENAI_NAMES)}); pass --weights"
        )
    path = Path(released_clip(OPENAI_NAMES[san.CLIP_MODEL_NAME]))
    load_clip_weights(model, openai_state_dict(path), path)
    return path
