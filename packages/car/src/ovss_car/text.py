"""Text embeddings as CaR computes them."""

from __future__ import annotations

import clip
import torch
from clip.model import CLIP
from torch.nn import functional as F

from ovss_car.clip_model import encode_text


@torch.no_grad()
def class_embeddings(
    model: CLIP, names: list[str], templates: tuple[str, ...] | None
) -> torch.Tensor:
    """``[C, D]``: per name, the normalised mean of its normalised template embeddings; with
    ``templates=None`` the name itself is the one prompt."""
    prompts = (
        [name for name in names]
        if templates is None
        else [template.format(name) for name in names for template in templates]
    )
    count = 1 if templates is None else len(templates)
    device = model.text_projection.device
    embeddings = F.normalize(encode_text(model, clip.tokenize(prompts).to(device)), dim=-1)
    return F.normalize(embeddings.reshape(len(names), count, -1).mean(dim=1), dim=-1)


@torch.no_grad()
def prompt_embeddings(model: CLIP, prompts: list[str]) -> torch.Tensor:
    """``[N, D]`` L2-normalised embeddings of finished prompts."""
    device = model.text_projection.device
    return F.normalize(encode_text(model, clip.tokenize(prompts).to(device)), dim=-1)
