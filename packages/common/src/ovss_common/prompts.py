"""Prompt templates shared by the methods, and the length-sorted batching of text encoding.

``encode_prompts`` is the one place where a vocabulary's prompts are batched for a causal CLIP
text tower: sorted by length and encoded ``batch`` at a time, so that each batch can be cut
after its own longest prompt (exact, since a causal tower's pooled token never sees later
positions). torch is imported inside: the harness never calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The 14 ViLD templates, in the published order (SAN, OVSeg; CaR adds one in front).
VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

#: Prompts per text-tower call (small batches of similar length run fastest on CPUs).
PROMPT_BATCH = 64


def template_means(
    names: list[str],
    templates: tuple[str, ...],
    tokenize: Callable[[list[str]], Any],
    encode: Callable[[Any], Any],
    batch: int = PROMPT_BATCH,
) -> Any:
    """``[C, D]``: per name, the L2-normalised mean of its templates' L2-normalised embeddings.

    ``tokenize`` maps prompts to ``[N, 77]`` token ids (end-of-text = the largest id);
    ``encode`` maps a ``[n, 77]`` batch to ``[n, D]`` normalised embeddings.
    """
    import torch
    from torch.nn import functional as F

    prompts = [template.format(name) for name in names for template in templates]
    tokens = tokenize(prompts)
    order = tokens.argmax(dim=-1).argsort()
    parts = []
    for start in range(0, len(prompts), batch):
        rows = order[start : start + batch]
        parts.append((rows, encode(tokens[rows])))
    embeddings = torch.empty(
        len(prompts), parts[0][1].shape[1], dtype=parts[0][1].dtype, device=parts[0][1].device
    )
    for rows, encoded in parts:
        embeddings[rows.to(embeddings.device)] = encoded
    means = embeddings.reshape(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(means, dim=-1)
