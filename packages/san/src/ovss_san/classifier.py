"""SAN's open-vocabulary classifier: CLIP's text tower plus a learned background embedding."""

from __future__ import annotations

import torch
from open_clip.model import CLIP
from open_clip.tokenizer import tokenize
from torch import nn
from torch.nn import functional as F

from ovss_common.prompts import VILD_TEMPLATES, template_means

#: Prompt templates by ``MODEL.SAN.CLIP_TEMPLATE_SET``.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"vild": VILD_TEMPLATES}


def templates(name: str) -> tuple[str, ...]:
    if name not in TEMPLATE_SETS:
        raise ValueError(
            f"CLIP_TEMPLATE_SET {name!r} is not available (have: {', '.join(TEMPLATE_SETS)})"
        )
    return TEMPLATE_SETS[name]


class OpenVocabClassifier(nn.Module):
    """Class embeddings for any vocabulary, plus SAN's learned background embedding.

    A class embedding is the L2-normalised mean over templates of the L2-normalised text
    embeddings of ``template.format(name)``. Embeddings are cached per class name.

    Args:
        clip: the open_clip model whose text tower is taken.
        prompt_templates: the templates (``templates("vild")``).
    """

    def __init__(self, clip: CLIP, prompt_templates: tuple[str, ...]) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.logit_scale = clip.logit_scale
        # The text tower stays frozen in SAN's training; only the background embedding learns.
        self.requires_grad_(False)
        embed_dim = clip.text_projection.shape[1]
        self.bg_embed = nn.Parameter(torch.randn(1, embed_dim) * embed_dim**-0.5)
        self.register_buffer("attn_mask", clip.attn_mask.clone(), persistent=True)
        self.prompt_templates = tuple(prompt_templates)
        self._cache: dict[str, torch.Tensor] = {}

    def clear_cache(self) -> None:
        self._cache.clear()

    def _apply(self, fn, recurse=True):
        # Moving or casting the weights (``.to``, ``.half``) makes cached embeddings stale.
        self.clear_cache()
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, 77]`` token ids -> ``[N, D]`` L2-normalised text embeddings.

        The causal tower is run only up to the last end-of-text token of the batch: positions
        after it cannot change the pooled ones.
        """
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        x = self.token_embedding(tokens[:, :length]) + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length].to(x.dtype)
        for block in self.transformer.resblocks:
            x = block(x, attn_mask=mask)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode_names(self, names: list[str]) -> torch.Tensor:
        """``[C, D]`` class embeddings of ``names`` (templates averaged), uncached."""
        device = self.text_projection.device
        return template_means(
            names,
            self.prompt_templates,
            lambda prompts: tokenize(prompts).to(device),
            self.encode_tokens,
        )

    def forward(self, vocabulary: list[str]) -> torch.Tensor:
        """``[C + 1, D]`` normalised class weights: the vocabulary's classes, then background.

        The text embeddings carry no gradient (the text tower is frozen); the background
        embedding does, so that training updates it."""
        missing = [name for name in dict.fromkeys(vocabulary) if name not in self._cache]
        if missing:
            self._cache.update(zip(missing, self.encode_names(missing), strict=True))
        weights = torch.stack([self._cache[name] for name in vocabulary])
        weights = torch.cat([weights, self.bg_embed.to(weights.dtype)])
        return F.normalize(weights, dim=-1)
