"""MaskFormer's FPN pixel decoder: backbone features to per-pixel mask features."""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn
from torch.nn import functional as F


class BasePixelDecoder(nn.Module):
    """Top-down FPN over ``res2..res5`` (nearest upsampling, GroupNorm, ReLU), then a 3x3 conv.

    Parameter names (``adapter_i``, ``layer_i``, ``mask_features``) are the released ones:
    ``i`` counts from the highest resolution (1 = res2); the lowest resolution has no adapter.

    Args:
        input_shape: feature name -> channels and stride.
        conv_dim: FPN width.
        mask_dim: width of the mask features.
        norm: detectron2 norm name ("GN" in the released configs).
    """

    def __init__(
        self, input_shape: dict[str, ShapeSpec], conv_dim: int, mask_dim: int, norm: str
    ) -> None:
        super().__init__()
        ordered = sorted(input_shape.items(), key=lambda item: item[1].stride)
        self.in_features = [name for name, _ in ordered]
        bias = norm == ""
        last = len(ordered)
        for index, (_, shape) in enumerate(ordered, start=1):
            if index == last:
                conv = Conv2d(
                    shape.channels,
                    conv_dim,
                    3,
                    padding=1,
                    bias=bias,
                    norm=get_norm(norm, conv_dim),
                    activation=F.relu,
                )
                self.add_module(f"layer_{index}", conv)
                continue
            self.add_module(
                f"adapter_{index}",
                Conv2d(shape.channels, conv_dim, 1, bias=bias, norm=get_norm(norm, conv_dim)),
            )
            self.add_module(
                f"layer_{index}",
                Conv2d(
                    conv_dim,
                    conv_dim,
                    3,
                    padding=1,
                    bias=bias,
                    norm=get_norm(norm, conv_dim),
                    activation=F.relu,
                ),
            )
        self.mask_features = Conv2d(conv_dim, mask_dim, 3, padding=1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone features -> mask features ``[B, mask_dim, H/4, W/4]`` (stride of res2)."""
        count = len(self.in_features)
        y = getattr(self, f"layer_{count}")(features[self.in_features[-1]])
        for index in range(count - 1, 0, -1):
            lateral = getattr(self, f"adapter_{index}")(features[self.in_features[index - 1]])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = getattr(self, f"layer_{index}")(y)
        return self.mask_features(y)
