"""The two OpenAI CLIPs CaR uses, and the forward passes CaR runs through them.

CaR loads OpenAI-format checkpoints (a bare state dict, architecture inferred from its
shapes) and runs CLIP in its own way:

- the image tower resizes its positional embedding bilinearly to the token grid and rounds it
  through fp16 (as the original does, also on CPUs), and runs **all blocks but the last**
  (the original's transformer runs every block only for a 77-token sequence), returning every
  block's head-averaged attention map;
- the text tower runs all blocks (77 tokens) and pools the end-of-text token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from clip.model import CLIP, build_model
from torch.nn import functional as F

from ovss_common.checkpoints import CheckpointError

#: The original runs every block only for a sequence of this length (the text context).
CONTEXT_LENGTH = 77


def load_clip(path: str | Path) -> CLIP:
    """An OpenAI-format CLIP checkpoint (bare state dict, fp16 or fp32; or an open_clip
    checkpoint of an OpenAI model) as an fp32 eval model."""
    from ovss_common.openai_clip import openai_state_dict

    state = openai_state_dict(path)
    try:
        model = build_model(dict(state))
    except (KeyError, RuntimeError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a loadable OpenAI CLIP state dict ({message})"
        ) from None
    return model.float().eval()


def random_clip(name: str) -> CLIP:
    """The OpenAI CLIP architecture ``name`` (``ViT-B/16``, ``ViT-L/14``) with OpenAI's random
    initialisation, fp32, eval mode; KeyError for another name."""
    from ovss_common.clip_geometry import OPENAI_CLIP_GEOMETRIES

    return CLIP(**OPENAI_CLIP_GEOMETRIES[name]).float().eval()


def grid_positional_embedding(model: CLIP, grid: tuple[int, int]) -> torch.Tensor:
    """``[1 + h*w, C]``: the image tower's positional embedding bilinearly resized to ``grid``
    (class row kept), rounded through fp16 as the original does."""
    embedding = model.visual.positional_embedding
    cls_row, rows = embedding[:1], embedding[1:]
    side = round(rows.shape[0] ** 0.5)
    rows = rows.T.reshape(1, -1, side, side)
    rows = F.interpolate(rows, size=grid, mode="bilinear", align_corners=False)
    resized = torch.cat([cls_row, rows.reshape(rows.shape[1], -1).T])
    return resized.half().to(embedding.dtype)


def block_with_attention(
    block: torch.nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One residual block on ``[L, B, C]`` tokens (optional additive ``[L, L]`` mask); also
    returns its head-averaged attention ``[B, L, L]``."""
    attended, weights = block.attn(*(block.ln_1(x),) * 3, need_weights=True, attn_mask=attn_mask)
    x = x + attended
    return x + block.mlp(block.ln_2(x)), weights


def encode_image_tokens(
    model: CLIP, image: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``[B, 3, H, W]`` -> tokens ``[1 + h*w, B, C]`` after the blocks the original runs, and
    their attention maps (``[B, L, L]`` each)."""
    visual = model.visual
    patch = visual.conv1.kernel_size[0]
    grid = (image.shape[-2] // patch, image.shape[-1] // patch)
    x = visual.conv1(image.to(visual.conv1.weight.dtype)).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + grid_positional_embedding(model, grid).to(x.dtype)
    x = visual.ln_pre(x).transpose(0, 1)
    blocks = visual.transformer.resblocks
    depth = len(blocks) if x.shape[0] == CONTEXT_LENGTH else len(blocks) - 1
    attention = []
    for block in blocks[:depth]:
        x, weights = block_with_attention(block, x)
        attention.append(weights)
    return x, attention


def encode_text(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``[N, 77]`` token ids -> ``[N, D]`` unnormalised text embeddings (every block).

    The causal tower runs only up to the batch's last end-of-text token: later positions
    cannot change the pooled one.
    """
    eot = tokens.argmax(dim=-1)
    length = int(eot.max()) + 1
    x = model.token_embedding(tokens[:, :length]) + model.positional_embedding[:length]
    x = x.transpose(0, 1)
    mask = model.transformer.resblocks[0].attn_mask[:length, :length].to(x)
    for block in model.transformer.resblocks:
        x, _ = block_with_attention(block, x, mask)
    x = model.ln_final(x.transpose(0, 1))
    return x[torch.arange(x.shape[0], device=x.device), eot] @ model.text_projection
