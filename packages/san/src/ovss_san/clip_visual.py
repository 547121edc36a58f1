"""SAN's two views of the CLIP image tower: the feature extractor and the recognition head.

Both drive open_clip's residual blocks themselves in batch-first ``[B, L, C]`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F

#: SAN's rec-head mask value for blocked attention (finite, as trained).
BLOCKED = -100.0


@dataclass
class ClipFeatures:
    """CLIP tokens after ``ln_pre`` (index 0) and after each extractor block (index i).

    Attributes:
        maps: index -> patch tokens as ``[B, C, h, w]``.
        cls_tokens: index -> class token ``[B, C]``.
        grid: the CLIP token grid ``(h, w)``.
    """

    maps: dict[int, torch.Tensor]
    cls_tokens: dict[int, torch.Tensor]
    grid: tuple[int, int]


def resize_positional_embedding(
    embedding: torch.Tensor, source: tuple[int, int], target: tuple[int, int]
) -> torch.Tensor:
    """Bicubically resize the grid part of a ``[1 + h*w, C]`` embedding (class row kept)."""
    if source == target:
        return embedding
    cls_row, grid = embedding[:1], embedding[1:]
    grid = grid.T.reshape(1, -1, *source)
    grid = F.interpolate(grid, size=target, mode="bicubic", align_corners=False, antialias=False)
    return torch.cat([cls_row, grid.reshape(grid.shape[1], -1).T])


class ClipFeatureExtractor(nn.Module):
    """CLIP's stem and its first ``last_layer_idx`` blocks.

    Args:
        visual: the open_clip image tower (its modules are taken, not copied).
        last_layer_idx: number of blocks to run.
        keep: output indices to return (others are not stored).
    """

    def __init__(self, visual: VisionTransformer, last_layer_idx: int, keep: set[int]) -> None:
        super().__init__()
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.resblocks = nn.ModuleList(visual.transformer.resblocks[:last_layer_idx])
        self.pretrained_grid = tuple(visual.grid_size)
        self.keep = set(keep)

    @property
    def width(self) -> int:
        return self.conv1.out_channels

    def forward(self, image: torch.Tensor) -> ClipFeatures:
        """``image`` ``[B, 3, H, W]`` (normalised) -> tokens on the grid ``(H // p, W // p)``."""
        x = self.conv1(image)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1)
        positions = resize_positional_embedding(
            self.positional_embedding.to(x.dtype), self.pretrained_grid, (h, w)
        )
        x = self.ln_pre(x + positions)
        features = ClipFeatures(maps={}, cls_tokens={}, grid=(h, w))
        self._save(features, 0, x)
        for index, block in enumerate(self.resblocks, start=1):
            x = block(x)
            self._save(features, index, x)
        return features

    def _save(self, features: ClipFeatures, index: int, x: torch.Tensor) -> None:
        if index in self.keep:
            b, _, c = x.shape
            features.maps[index] = x[:, 1:].transpose(1, 2).reshape(b, c, *features.grid)
            features.cls_tokens[index] = x[:, 0]


def downsample_bias(bias: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """Resize ``[B, C, h', w']`` attention biases from the side grid to the CLIP grid."""
    if method in ("bilinear", "bicubic", "nearest"):
        align = None if method == "nearest" else False
        return F.interpolate(bias, size=size, mode=method, align_corners=align)
    if method == "avg":
        return F.adaptive_avg_pool2d(bias, size)
    if method == "max":
        return F.adaptive_max_pool2d(bias, size)
    raise ValueError(f"unknown REC_DOWNSAMPLE_METHOD {method!r}")


class RecognitionHead(nn.Module):
    """CLIP's last blocks turned into a mask recogniser ("sos" tokens with attention biases).

    Every one of the ``num_queries`` sos tokens starts as a copy of the class token. Each
    attends only to itself and to the patch tokens, weighted by its predicted attention bias;
    class and patch tokens attend normally among themselves and never to the sos tokens.

    Args:
        visual: the open_clip image tower.
        first_layer_idx: index of the first block of the head.
        num_queries: number of sos tokens (= side adapter queries).
        downsample_method: how biases go from the side grid to the CLIP grid.
    """

    def __init__(
        self,
        visual: VisionTransformer,
        first_layer_idx: int,
        num_queries: int,
        downsample_method: str,
    ) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(visual.transformer.resblocks[first_layer_idx:])
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.first_layer_idx = first_layer_idx
        self.num_queries = num_queries
        self.downsample_method = downsample_method

    @property
    def num_heads(self) -> int:
        return self.resblocks[0].attn.num_heads

    def attention_mask(self, attn_bias: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``[B, heads or 1, Q, h', w']`` bias -> ``[B * heads, Q + 1 + hw, Q + 1 + hw]`` mask."""
        b, bias_heads, q, hs, ws = attn_bias.shape
        heads = self.num_heads
        if bias_heads not in (1, heads):
            raise ValueError(f"attention bias has {bias_heads} heads, CLIP has {heads}")
        bias = downsample_bias(
            attn_bias.reshape(b, bias_heads * q, hs, ws), grid, self.downsample_method
        )
        bias = bias.reshape(b, bias_heads, q, -1).expand(b, heads, q, -1).reshape(b * heads, q, -1)
        patches = bias.shape[-1]
        size = q + 1 + patches
        mask = bias.new_zeros(size, size)
        mask[:, :q] = BLOCKED
        mask[torch.arange(q), torch.arange(q)] = 0.0
        mask[:q, q] = BLOCKED
        mask = mask.expand(b * heads, size, size).clone()
        mask[:, :q, q + 1 :] = bias
        return mask

    def forward(self, features: ClipFeatures, attn_biases: list[torch.Tensor]) -> torch.Tensor:
        """Mask embeddings ``[B, Q, D]`` (L2-normalised).

        ``attn_biases`` holds ``[B, heads, Q, h', w']`` biases: one shared by every block, or
        one per block.
        """
        if len(attn_biases) not in (1, len(self.resblocks)):
            raise ValueError(
                f"{len(attn_biases)} attention biases for {len(self.resblocks)} recognition blocks"
            )
        cls = features.cls_tokens[self.first_layer_idx]
        patches = features.maps[self.first_layer_idx]
        b, c = cls.shape
        tokens = torch.cat(
            [
                cls[:, None].expand(b, self.num_queries, c),
                cls[:, None],
                patches.flatten(2).transpose(1, 2),
            ],
            dim=1,
        )
        masks = [self.attention_mask(bias, features.grid).to(tokens.dtype) for bias in attn_biases]
        for index, block in enumerate(self.resblocks):
            tokens = block(tokens, attn_mask=masks[index % len(masks)])
        sos = self.ln_post(tokens[:, : self.num_queries]) @ self.proj
        return F.normalize(sos, dim=-1)
