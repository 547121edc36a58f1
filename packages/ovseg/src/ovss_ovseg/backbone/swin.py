"""Swin Transformer backbone in detectron2 layout (OVSeg's ``D2SwinTransformer``), inference only.

Tokens travel as channels-last maps [B, H, W, C]. Each stage pads its maps to multiples of the
window size (zeros after ``norm1``, not masked in attention), runs window attention with a learned
relative position bias, shifts the windows by half a window in every second block (with a mask
that keeps the wrapped-around regions apart) and, except in the last stage, merges 2x2 patches.
The output of stage ``i`` goes through ``norm{i}`` and is returned as ``res{i + 2}`` [B, C_i, H_i,
W_i] at stride ``patch_size * 2**i``. Dropout and stochastic depth are the identity at inference
and are therefore absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn
from torch.nn import functional as F

# Attention logit added between tokens of different regions of a shifted window.
_MASKED_LOGIT = -100.0


def _pad_bottom_right(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pads a channels-last map [B, H, W, C] to H and W multiples of ``multiple``."""
    height, width = x.shape[1:3]
    return F.pad(x, (0, 0, 0, -width % multiple, 0, -height % multiple))


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Splits [B, H, W, C] (H, W multiples of ``window``) into windows [B * nW, window**2, C],
    ordered by batch, then window row, then window column."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_merge(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: [B * nW, window**2, C] -> [B, H, W, C]."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def relative_position_index(window: int) -> torch.Tensor:
    """Index [N, N] (N = window**2, int64) into the [(2 * window - 1)**2, heads] bias table:
    ``(dy + window - 1) * (2 * window - 1) + (dx + window - 1)`` for the offset (dy, dx) from
    key token to query token."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack((rows.flatten(), cols.flatten()))
    offsets = coords[:, :, None] - coords[:, None, :] + window - 1
    return offsets[0] * (2 * window - 1) + offsets[1]


def _shift_regions(size: int, window: int, shift: int) -> torch.Tensor:
    """Region label [size] along one padded axis after a cyclic shift by ``shift``: 0 for the
    positions before the last window, 1 for the last window up to its final ``shift`` positions,
    2 for those final positions (which come from the other end of the map)."""
    labels = torch.zeros(size, dtype=torch.long)
    labels[size - window :] = 1
    labels[size - shift :] = 2
    return labels


def shifted_window_mask(
    height: int, width: int, window: int, shift: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Additive attention mask [nW, N, N] for a padded map of ``height`` x ``width`` shifted by
    ``shift``: 0 between tokens of the same region, ``_MASKED_LOGIT`` otherwise."""
    rows = _shift_regions(height, window, shift)
    cols = _shift_regions(width, window, shift)
    regions = (rows[:, None] * 3 + cols[None, :]).view(1, height, width, 1)
    labels = window_partition(regions, window).squeeze(-1)
    different = labels[:, :, None] != labels[:, None, :]
    mask = torch.zeros(different.shape, dtype=dtype).masked_fill(different, _MASKED_LOGIT)
    return mask.to(device)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows with a relative position bias."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, qkv_bias: bool, qk_scale: float | None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Windows [B * nW, N, C], optional additive mask [nW, N, N] -> [B * nW, N, C]."""
        windows, tokens, channels = x.shape
        qkv = self.qkv(x).view(windows, tokens, 3, self.num_heads, channels // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        logits = (query * self.scale) @ key.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index]
        logits = logits + bias.permute(2, 0, 1)
        if mask is not None:
            shape = (-1, mask.shape[0], self.num_heads, tokens, tokens)
            logits = (logits.view(shape) + mask[None, :, None]).flatten(0, 1)
        out = logits.softmax(dim=-1) @ value
        return self.proj(out.transpose(1, 2).reshape(windows, tokens, channels))


class Mlp(nn.Module):
    """Two linear layers with an exact GELU in between: [..., C] -> [..., C]."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm block: (shifted) window attention and MLP, each with a residual connection."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor | None) -> torch.Tensor:
        """[B, H, W, C] -> [B, H, W, C]; ``shift_mask`` [nW, N, N] is used if this block shifts."""
        height, width = x.shape[1:3]
        y = _pad_bottom_right(self.norm1(x), self.window_size)
        padded_height, padded_width = y.shape[1:3]
        shift = self.shift_size
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        windows = self.attn(window_partition(y, self.window_size), shift_mask if shift else None)
        y = window_merge(windows, self.window_size, padded_height, padded_width)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + y[:, :height, :width]
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Concatenates each 2x2 neighbourhood and projects it: [B, H, W, C] -> [B, ⌈H/2⌉, ⌈W/2⌉, 2C]
    (odd sizes are zero-padded first)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_bottom_right(x, 2)
        neighbours = (x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2])
        return self.reduction(self.norm(torch.cat(neighbours, dim=-1)))


class SwinStage(nn.Module):
    """Blocks at one resolution, every second one shifted by half a window, then an optional
    patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        downsample: bool,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim,
                num_heads,
                window_size,
                0 if index % 2 == 0 else self.shift_size,
                mlp_ratio,
                qkv_bias,
                qk_scale,
            )
            for index in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, H, W, C] -> (stage output [B, H, W, C], next stage input [B, H', W', C'])."""
        height, width = x.shape[1:3]
        window = self.window_size
        shift_mask = shifted_window_mask(
            -(-height // window) * window,
            -(-width // window) * window,
            window,
            self.shift_size,
            x.device,
            x.dtype,
        )
        for block in self.blocks:
            x = block(x, shift_mask)
        return x, x if self.downsample is None else self.downsample(x)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: [B, C_in, H, W] -> [B, ⌈H/p⌉, ⌈W/p⌉, C] (the image is
    zero-padded to multiples of the patch size p), optionally layer-normalised."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        x = F.pad(x, (0, -width % self.patch_size, 0, -height % self.patch_size))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinTransformer(Backbone):
    """Swin Transformer returning ``{"res2", ..., "res5"}`` features [B, C_i, H_i, W_i].

    The state-dict keys are those of the OVSeg checkpoints under ``backbone.``: ``patch_embed``,
    ``layers.{i}.blocks.{j}`` / ``layers.{i}.downsample`` and ``norm{i}``. A zero or missing
    ``qk_scale`` means ``head_dim ** -0.5``. Absolute position embeddings are not supported (no
    OVSeg config uses them).
    """

    def __init__(
        self,
        *,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        patch_norm: bool = True,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"{len(depths)} stage depths but {len(num_heads)} head counts")
        names = [f"res{index + 2}" for index in range(len(depths))]
        unknown = sorted(set(out_features) - set(names))
        if unknown:
            raise ValueError(f"unknown Swin output features {unknown}; choose from {names}")
        self.num_features = [embed_dim * 2**index for index in range(len(depths))]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.layers = nn.ModuleList(
            SwinStage(
                dim,
                depth,
                heads,
                window_size,
                mlp_ratio,
                qkv_bias,
                qk_scale,
                downsample=index < len(depths) - 1,
            )
            for index, (dim, depth, heads) in enumerate(
                zip(self.num_features, depths, num_heads, strict=True)
            )
        )
        for index, dim in enumerate(self.num_features):
            self.add_module(f"norm{index}", nn.LayerNorm(dim))
        self._out_features = [name for name in names if name in out_features]
        self._out_feature_channels = dict(zip(names, self.num_features, strict=True))
        self._out_feature_strides = {
            name: patch_size * 2**index for index, name in enumerate(names)
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image batch [B, C_in, H, W] -> ``{name: [B, C_i, ⌈H/s_i⌉, ⌈W/s_i⌉]}`` for the
        selected outputs (s_i = 4, 8, 16, 32 with patch size 4)."""
        if x.dim() != 4:
            raise ValueError(f"SwinTransformer expects [B, C, H, W], got shape {tuple(x.shape)}")
        x = self.patch_embed(x)
        features = {}
        for index, stage in enumerate(self.layers):
            out, x = stage(x)
            name = f"res{index + 2}"
            if name in self._out_features:
                norm = getattr(self, f"norm{index}")
                features[name] = norm(out).permute(0, 3, 1, 2).contiguous()
        return features

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32


def swin_kwargs_from_config(cfg: CfgNode, in_chans: int = 3) -> dict:
    """:class:`SwinTransformer` arguments from ``cfg.MODEL.SWIN``.

    ``DROP_RATE``, ``ATTN_DROP_RATE``, ``DROP_PATH_RATE`` and ``USE_CHECKPOINT`` only act in
    training, and ``PRETRAIN_IMG_SIZE`` only sizes absolute position embeddings, so they do not
    reach the module. Settings that would change the architecture but that no OVSeg model uses
    (``APE``, ``NORM_INDICES``, ``PROJECTION``) are refused.
    """
    swin = cfg.MODEL.SWIN
    if swin.APE:
        raise ValueError("MODEL.SWIN.APE (absolute position embedding) is not supported")
    if swin.get("NORM_INDICES") is not None:
        raise ValueError("MODEL.SWIN.NORM_INDICES must be null (every stage output is normalised)")
    if swin.get("PROJECTION", False):
        raise ValueError("MODEL.SWIN.PROJECTION (the extra 'fc' output) is not supported")
    return {
        "patch_size": swin.PATCH_SIZE,
        "in_chans": in_chans,
        "embed_dim": swin.EMBED_DIM,
        "depths": list(swin.DEPTHS),
        "num_heads": list(swin.NUM_HEADS),
        "window_size": swin.WINDOW_SIZE,
        "mlp_ratio": swin.MLP_RATIO,
        "qkv_bias": swin.QKV_BIAS,
        "qk_scale": swin.QK_SCALE,
        "patch_norm": swin.PATCH_NORM,
        "out_features": list(swin.OUT_FEATURES),
    }


@BACKBONE_REGISTRY.register()
def D2SwinTransformer(cfg: CfgNode, input_shape: ShapeSpec) -> SwinTransformer:
    """detectron2 backbone builder (``MODEL.BACKBONE.NAME: D2SwinTransformer``)."""
    return SwinTransformer(**swin_kwargs_from_config(cfg, in_chans=input_shape.channels))
