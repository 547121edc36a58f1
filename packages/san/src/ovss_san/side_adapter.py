"""The side adapter network: a small timm ViT that reads the image at full resolution,
takes in CLIP features, and predicts mask proposals and CLIP attention biases."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F

from ovss_san.clip_visual import ClipFeatures
from ovss_san.mask_decoder import MLPMaskDecoder

_SIDE_VIT_NAME = re.compile(r"^vit_w(\d+)n(\d+)d(\d+)_patch(\d+)$")


@dataclass(frozen=True)
class SideViTConfig:
    """A side ViT named ``vit_w<embed_dim>n<num_heads>d<depth>_patch<patch_size>``."""

    embed_dim: int
    num_heads: int
    depth: int
    patch_size: int

    @classmethod
    def from_name(cls, name: str) -> SideViTConfig:
        match = _SIDE_VIT_NAME.match(name)
        if match is None:
            raise ValueError(
                f"side ViT name {name!r} is not of the form vit_w<width>n<heads>d<depth>_patch<p>"
            )
        return cls(*(int(group) for group in match.groups()))


def build_side_vit(name: str, image_size: int, drop_path_rate: float) -> VisionTransformer:
    """The side ViT: timm's ViT (MLP ratio 4, qkv bias, LayerNorm eps 1e-6) without class
    token, final norm or head; its positional embedding covers ``image_size / patch`` squared."""
    config = SideViTConfig.from_name(name)
    vit = VisionTransformer(
        img_size=image_size,
        patch_size=config.patch_size,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        class_token=False,
        global_pool="",
        num_classes=0,
        fc_norm=False,
        drop_path_rate=drop_path_rate,
    )
    vit.norm = nn.Identity()
    return vit


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class AddFusion(nn.Module):
    """Adds projected CLIP features ``[B, C_clip, h, w]`` to side tokens ``[B, h'w', C]``."""

    def __init__(self, clip_channels: int, side_channels: int) -> None:
        super().__init__()
        self.input_proj = nn.Sequential(
            ChannelLayerNorm(clip_channels), nn.Conv2d(clip_channels, side_channels, 1)
        )
        # The original's initialisation of the projection (Caffe2's "Xavier" fill).
        nn.init.kaiming_uniform_(self.input_proj[1].weight, a=1)
        nn.init.zeros_(self.input_proj[1].bias)

    def forward(
        self, tokens: torch.Tensor, clip_map: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        projected = self.input_proj(clip_map.contiguous())
        projected = F.interpolate(projected, size=grid, mode="bilinear", align_corners=False)
        return tokens + projected.permute(0, 2, 3, 1).reshape(tokens.shape)


def parse_fusion_map(entries: list[str]) -> dict[int, int]:
    """``["0->0", "3->1", ...]`` (CLIP index -> side block) as ``{side block: CLIP index}``."""
    fusion = {}
    for entry in entries:
        source, _, target = entry.partition("->")
        if not source.strip().isdigit() or not target.strip().isdigit():
            raise ValueError(f"FUSION_MAP entry {entry!r} is not '<clip index>-><side block>'")
        fusion[int(target)] = int(source)
    return fusion


class SideAdapterNetwork(nn.Module):
    """SAN's region-wise side adapter.

    Learned queries are prepended to the side ViT's patch tokens; CLIP features are added to
    the patch tokens before block ``t`` for each ``t`` in the fusion map; positional
    embeddings are re-added after every block but the last. The output after each block of
    ``output_blocks`` (deep supervision) can be decoded into masks and attention biases;
    inference decodes the last one only.

    Args:
        vit_model: the side ViT (``build_side_vit``).
        fusion_layers: ``layer_<t>`` -> ``AddFusion`` for each side block ``t``.
        fusion_map: side block -> CLIP feature index.
        mask_decoder: the ``MLPMaskDecoder``.
        num_queries: number of learned queries.
        output_blocks: the blocks whose outputs are decoded in training (deep supervision),
            ascending; the last one is the output of inference.
    """

    def __init__(
        self,
        vit_model: VisionTransformer,
        fusion_layers: nn.ModuleDict,
        fusion_map: dict[int, int],
        mask_decoder: MLPMaskDecoder,
        num_queries: int,
        output_blocks: tuple[int, ...],
    ) -> None:
        super().__init__()
        width = vit_model.embed_dim
        self.vit_model = vit_model
        self.query_embed = nn.Parameter(torch.empty(1, num_queries, width))
        self.query_pos_embed = nn.Parameter(torch.empty(1, num_queries, width))
        nn.init.normal_(self.query_embed, std=0.02)
        nn.init.normal_(self.query_pos_embed, std=0.02)
        self.fusion_layers = fusion_layers
        self.mask_decoder = mask_decoder
        self.fusion_map = dict(fusion_map)
        self.num_queries = num_queries
        self.output_blocks = tuple(sorted(output_blocks))

    def positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[1, Q + h'w', C]``: query positions, then patch positions resized to ``grid``."""
        pos_embed = self.vit_model.pos_embed
        trained = self.vit_model.patch_embed.grid_size
        if pos_embed.shape[1] != grid[0] * grid[1]:
            pos_embed = pos_embed.reshape(1, *trained, -1).permute(0, 3, 1, 2)
            pos_embed = F.interpolate(pos_embed, size=grid, mode="bicubic", align_corners=False)
            pos_embed = pos_embed.flatten(2).transpose(1, 2)
        return torch.cat([self.query_pos_embed, pos_embed], dim=1)

    def _fuse(
        self, block: int, x: torch.Tensor, clip: ClipFeatures, grid: tuple[int, int]
    ) -> torch.Tensor:
        if block not in self.fusion_map:
            return x
        q = self.num_queries
        fused = self.fusion_layers[f"layer_{block}"](
            x[:, q:], clip.maps[self.fusion_map[block]], grid
        )
        return torch.cat([x[:, :q], fused], dim=1)

    def forward(
        self, image: torch.Tensor, clip: ClipFeatures
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The inference output (the last of ``output_blocks``).

        Args:
            image: ``[B, 3, H, W]`` normalised, padded image (full resolution).
            clip: CLIP features of the downscaled image.

        Returns:
            mask_logits ``[B, Q, H/p, W/p]`` and attention biases ``[B, heads, Q, H/p, W/p]``.
        """
        return self.decode(image, clip, self.output_blocks[-1:])[0]

    def decode(
        self, image: torch.Tensor, clip: ClipFeatures, blocks: tuple[int, ...]
    ) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Mask logits and attention biases after each block of ``blocks`` (ascending), as
        ``forward`` returns them for the last."""
        patches = self.vit_model.patch_embed.proj(image)
        b, c, h, w = patches.shape
        grid = (h, w)
        positions = self.positional_embedding(grid).to(patches.dtype)
        x = torch.cat([self.query_embed.expand(b, -1, -1), patches.flatten(2).transpose(1, 2)], 1)
        x = self.vit_model.norm_pre(x + positions)
        x = self._fuse(0, x, clip, grid)
        layers = self.vit_model.blocks
        q = self.num_queries
        outputs = []
        for index in range(1, max(blocks) + 1):
            x = layers[index - 1](x)
            x = self._fuse(index, x, clip, grid)
            if index in blocks:
                pixels = x[:, q:].transpose(1, 2).reshape(b, c, h, w)
                outputs.append(self.mask_decoder(x[:, :q], pixels))
            if index < len(layers) and index < max(blocks):
                x = x + positions
        return outputs
