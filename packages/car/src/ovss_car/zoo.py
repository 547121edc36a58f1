"""The weights CaR uses: OpenAI CLIPs from their Hugging Face mirrors, and SAM for the
optional refinement.

OpenAI's own download URLs are reported dead; the same weights are mirrored as open_clip
checkpoints, whose keys are OpenAI's. ``openai_state_dict`` keeps exactly the OpenAI-format
keys (the SHA-256 of each file is recorded on first download and verified afterwards).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ovss_common.checkpoints import CheckpointError, read_state_dict
from ovss_common.zoo import WeightsEntry

_MIRROR = "https://huggingface.co/timm/{}/resolve/main/open_clip_pytorch_model.bin"

#: OpenAI model name (as CaR configs spell it) -> its mirrored weights.
WEIGHTS = {
    "ViT-B/16": WeightsEntry(
        name="ViT-B/16",
        method="car",
        filename="openai_ViT-B-16.bin",
        url=_MIRROR.format("vit_base_patch16_clip_224.openai"),
    ),
    "ViT-L/14": WeightsEntry(
        name="ViT-L/14",
        method="car",
        filename="openai_ViT-L-14.bin",
        url=_MIRROR.format("vit_large_patch14_clip_224.openai"),
    ),
}

_SAM = "https://dl.fbaipublicfiles.com/segment_anything/{}"

#: SAM checkpoints for the optional refinement, by ``sam.model_type``; the publisher's file
#: names carry the first six hex digits of each file's MD5.
SAM_WEIGHTS = {
    model_type: WeightsEntry(
        name=f"sam_{model_type}",
        method="car",
        filename=filename,
        url=_SAM.format(filename),
        md5_prefix=filename.rsplit("_", 1)[1].removesuffix(".pth"),
    )
    for model_type, filename in (
        ("vit_h", "sam_vit_h_4b8939.pth"),
        ("vit_l", "sam_vit_l_0b3195.pth"),
        ("vit_b", "sam_vit_b_01ec64.pth"),
    )
}

#: Keys an OpenAI-format ViT CLIP state dict must have (besides the blocks).
REQUIRED_KEYS = (
    "positional_embedding",
    "text_projection",
    "logit_scale",
    "token_embedding.weight",
    "ln_final.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.proj",
    "visual.conv1.weight",
    "visual.ln_pre.weight",
    "visual.ln_post.weight",
)
#: Scalar keys of OpenAI's archives; build_model ignores them.
ARCHIVE_SCALARS = ("input_resolution", "context_length", "vocab_size")


def openai_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The OpenAI-format CLIP weights of ``path`` (an OpenAI archive's state dict or an
    open_clip checkpoint of an OpenAI model): buffers open_clip adds (``attn_mask``) dropped."""
    state = read_state_dict(path)
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not an OpenAI-format ViT CLIP (no {missing[0]})")
    prefixes = ("visual.", "transformer.resblocks.", "token_embedding.", "ln_final.")
    singles = {"positional_embedding", "text_projection", "logit_scale", *ARCHIVE_SCALARS}
    return {
        key: value
        for key, value in state.items()
        if (key in singles or key.startswith(prefixes)) and not key.endswith("attn_mask")
    }
