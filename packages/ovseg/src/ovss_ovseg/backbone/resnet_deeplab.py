"""DeepLab's ResNet (the "R101c" backbone of the smaller OVSeg model).

It differs from detectron2's stock ResNet in two places: an optional three-conv "deeplab" stem,
and dilated late stages (res4 by 1 or 2, res5 by 1, 2 or 4 times a per-block multi-grid). The
residual blocks and the ResNet container are detectron2's own; this module registers the
builder as ``build_resnet_deeplab_backbone`` in detectron2's ``BACKBONE_REGISTRY``.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import (
    BasicStem,
    BottleneckBlock,
    DeformBottleneckBlock,
    ResNet,
)
from fvcore.nn import weight_init
from torch.nn import functional as F

# Residual blocks in res2..res5 for each supported (bottleneck) depth.
BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
_STAGE_INDEX = {"res2": 2, "res3": 3, "res4": 4, "res5": 5}


def _conv3x3_norm(in_channels: int, out_channels: int, stride: int, norm: str) -> Conv2d:
    """A bias-free 3x3 conv (padding 1) followed by ``norm``, MSRA-initialised."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=3,
        stride=stride,
        padding=1,
        bias=False,
        norm=get_norm(norm, out_channels),
    )
    weight_init.c2_msra_fill(conv)
    return conv


class DeepLabStem(CNNBlockBase):
    """The "deeplab" stem: three 3x3 conv + norm + ReLU layers of widths ``out/2, out/2, out``
    (only the first has stride 2), then a 3x3 max-pool with stride 2 and padding 1.

    Maps ``[N, in_channels, H, W]`` to ``[N, out_channels, ceil(H / 4), ceil(W / 4)]``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 128, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, 4)
        half = out_channels // 2
        self.conv1 = _conv3x3_norm(in_channels, half, 2, norm)
        self.conv2 = _conv3x3_norm(half, half, 1, norm)
        self.conv3 = _conv3x3_norm(half, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C_in, H, W]`` -> ``[N, C_out, ceil(H / 4), ceil(W / 4)]``."""
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def build_stem(cfg: CfgNode, in_channels: int) -> CNNBlockBase:
    """The stem named by ``MODEL.RESNETS.STEM_TYPE``: ``"deeplab"`` or detectron2's ``"basic"``
    (7x7 conv + max-pool); both have stride 4 and ``STEM_OUT_CHANNELS`` output channels."""
    stems: dict[str, type[CNNBlockBase]] = {"basic": BasicStem, "deeplab": DeepLabStem}
    stem_type = cfg.MODEL.RESNETS.STEM_TYPE
    if stem_type not in stems:
        raise ValueError(f"unknown MODEL.RESNETS.STEM_TYPE {stem_type!r}; expected one of {stems}")
    return stems[stem_type](
        in_channels=in_channels,
        out_channels=cfg.MODEL.RESNETS.STEM_OUT_CHANNELS,
        norm=cfg.MODEL.RESNETS.NORM,
    )


def _stage_dilations(res4_dilation: int, res5_dilation: int) -> dict[int, int]:
    """Dilation of each stage index (2..5); a dilated res4 implies res5 dilated by 4."""
    if res4_dilation not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES4_DILATION must be 1 or 2, not {res4_dilation}")
    if res5_dilation not in (1, 2, 4):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1, 2 or 4, not {res5_dilation}")
    if res4_dilation == 2 and res5_dilation != 4:
        raise ValueError("MODEL.RESNETS.RES4_DILATION = 2 needs RES5_DILATION = 4")
    return {2: 1, 3: 1, 4: res4_dilation, 5: res5_dilation}


@BACKBONE_REGISTRY.register()
def build_resnet_deeplab_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> ResNet:
    """DeepLab's ResNet from ``MODEL.RESNETS`` and ``MODEL.BACKBONE.FREEZE_AT``.

    Stages past the deepest one in ``OUT_FEATURES`` are not built. A dilated stage keeps the
    resolution of the previous one (its first block has stride 1 instead of 2). Every block of
    res5 has dilation ``RES5_DILATION * RES5_MULTI_GRID[i]``, so the multi-grid applies even when
    ``RES5_DILATION`` is 1. Returns a detectron2 ``ResNet`` whose ``forward`` maps
    ``[N, C, H, W]`` to ``{name: [N, C_name, ~H / stride_name, ~W / stride_name]}``.
    """
    resnets = cfg.MODEL.RESNETS
    if resnets.DEPTH not in BLOCKS_PER_STAGE:
        raise ValueError(
            f"MODEL.RESNETS.DEPTH must be one of {sorted(BLOCKS_PER_STAGE)}, not {resnets.DEPTH}"
        )
    unknown = sorted(set(resnets.OUT_FEATURES) - set(_STAGE_INDEX))
    if unknown:
        raise ValueError(f"MODEL.RESNETS.OUT_FEATURES may only name res2..res5, not {unknown}")
    dilations = _stage_dilations(resnets.RES4_DILATION, resnets.RES5_DILATION)
    last_stage = max(_STAGE_INDEX[name] for name in resnets.OUT_FEATURES)

    stem = build_stem(cfg, input_shape.channels)
    stages: list[list[CNNBlockBase]] = []
    in_channels = resnets.STEM_OUT_CHANNELS
    out_channels = resnets.RES2_OUT_CHANNELS
    bottleneck_channels = resnets.NUM_GROUPS * resnets.WIDTH_PER_GROUP
    for i, stage in enumerate(range(2, last_stage + 1)):
        num_blocks = BLOCKS_PER_STAGE[resnets.DEPTH][i]
        dilation = dilations[stage]
        if stage == 5:
            if len(resnets.RES5_MULTI_GRID) != num_blocks:
                raise ValueError(
                    f"MODEL.RESNETS.RES5_MULTI_GRID needs {num_blocks} entries, "
                    f"got {list(resnets.RES5_MULTI_GRID)}"
                )
            block_dilations = [dilation * grid for grid in resnets.RES5_MULTI_GRID]
        else:
            block_dilations = [dilation] * num_blocks
        first_stride = 1 if stage == 2 or dilation > 1 else 2
        block_class: type[CNNBlockBase] = BottleneckBlock
        deform: dict[str, Any] = {}
        if resnets.DEFORM_ON_PER_STAGE[i]:
            block_class = DeformBottleneckBlock
            deform = {
                "deform_modulated": resnets.DEFORM_MODULATED,
                "deform_num_groups": resnets.DEFORM_NUM_GROUPS,
            }
        stages.append(
            ResNet.make_stage(
                block_class,
                num_blocks,
                in_channels=in_channels,
                out_channels=out_channels,
                stride_per_block=[first_stride] + [1] * (num_blocks - 1),
                dilation_per_block=block_dilations,
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=resnets.STRIDE_IN_1X1,
                num_groups=resnets.NUM_GROUPS,
                norm=resnets.NORM,
                **deform,
            )
        )
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2

    return ResNet(
        stem,
        stages,
        out_features=list(resnets.OUT_FEATURES),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
