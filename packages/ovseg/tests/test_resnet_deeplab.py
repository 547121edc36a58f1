"""DeepLab ResNet ("R101c"): the released checkpoint's backbone layout, and feature geometry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.resnet import BasicStem, DeformBottleneckBlock, ResNet

from ovss_ovseg.backbone.resnet_deeplab import DeepLabStem, build_resnet_deeplab_backbone

MANIFEST = Path(__file__).resolve().parent / "golden_full" / "ovseg_R101c_vitB16_ft_mpt.json"


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _r101c_cfg() -> CfgNode:
    """detectron2's defaults with MODEL.RESNETS / MODEL.BACKBONE of the released R101c config
    (this also adds the DeepLab keys RES4_DILATION, RES5_MULTI_GRID and STEM_TYPE)."""
    released = yaml.safe_load(_manifest()["resolved_config"])["MODEL"]
    cfg = get_cfg()
    for key, value in released["RESNETS"].items():
        cfg.MODEL.RESNETS[key] = value
    for key, value in released["BACKBONE"].items():
        cfg.MODEL.BACKBONE[key] = value
    return cfg


def _build(cfg: CfgNode) -> ResNet:
    backbone = build_backbone(cfg)
    assert isinstance(backbone, ResNet)
    return backbone


def test_released_config_is_a_deeplab_r101():
    cfg = _r101c_cfg()
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_deeplab_backbone"
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2
    resnets = cfg.MODEL.RESNETS
    assert (resnets.DEPTH, resnets.STEM_TYPE, resnets.NORM) == (101, "deeplab", "FrozenBN")
    assert (resnets.STEM_OUT_CHANNELS, resnets.RES2_OUT_CHANNELS) == (128, 256)
    assert (resnets.RES4_DILATION, resnets.RES5_DILATION) == (1, 1)
    assert list(resnets.RES5_MULTI_GRID) == [1, 2, 4]
    assert list(resnets.OUT_FEATURES) == ["res2", "res3", "res4", "res5"]
    assert not resnets.STRIDE_IN_1X1
    assert not any(resnets.DEFORM_ON_PER_STAGE)


def test_state_dict_matches_the_released_backbone_layout():
    manifest = _manifest()
    with torch.device("meta"):
        backbone = _build(_r101c_cfg())
    ours = {key: list(tensor.shape) for key, tensor in backbone.state_dict().items()}
    released = {
        entry["key"].removeprefix("backbone."): entry["shape"]
        for entry in manifest["state_dict"]
        if entry["key"].startswith("backbone.")
    }
    assert sorted(ours) == sorted(released)
    assert ours == released
    assert {tensor.dtype for tensor in backbone.state_dict().values()} == {torch.float32}
    numel = sum(tensor.numel() for tensor in backbone.state_dict().values())
    assert numel == manifest["numel_per_prefix"]["backbone"]
    assert isinstance(backbone.stem, DeepLabStem)


def test_features_have_the_configured_strides_and_dilations():
    torch.manual_seed(0)
    backbone = _build(_r101c_cfg()).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    expected = {"res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
    assert list(features) == list(expected)
    for name, (channels, stride) in expected.items():
        assert features[name].shape == (1, channels, 64 // stride, 96 // stride), name
        assert torch.isfinite(features[name]).all(), name
        spec = backbone.output_shape()[name]
        assert (spec.channels, spec.stride) == (channels, stride), name
    # the multi-grid dilates res5 even though RES5_DILATION is 1
    assert [block.conv2.dilation for block in backbone.res5] == [(1, 1), (2, 2), (4, 4)]
    assert all(block.conv2.dilation == (1, 1) for block in backbone.res4)
    # FREEZE_AT = 2 freezes the stem and res2
    assert not any(p.requires_grad for p in backbone.stem.parameters())
    assert not any(p.requires_grad for p in backbone.res2.parameters())
    assert all(p.requires_grad for p in backbone.res3.parameters())


def test_dilated_res4_and_res5_keep_stride_8():
    cfg = _r101c_cfg()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.RES4_DILATION = 2
    cfg.MODEL.RESNETS.RES5_DILATION = 4
    backbone = _build(cfg).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    assert {name: tuple(f.shape[2:]) for name, f in features.items()} == {
        "res2": (16, 24),
        "res3": (8, 12),
        "res4": (8, 12),
        "res5": (8, 12),
    }
    assert {name: spec.stride for name, spec in backbone.output_shape().items()} == {
        "res2": 4,
        "res3": 8,
        "res4": 8,
        "res5": 8,
    }
    assert all(block.conv2.dilation == (2, 2) for block in backbone.res4)
    assert [block.conv2.dilation for block in backbone.res5] == [(4, 4), (8, 8), (16, 16)]


def test_out_features_limit_the_stages_built():
    cfg = _r101c_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3"]
    with torch.device("meta"):
        backbone = _build(cfg)
    assert backbone.stage_names == ("res2", "res3")


def test_basic_stem_and_deformable_stage():
    cfg = _r101c_cfg()
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, True]
    with torch.device("meta"):
        backbone = _build(cfg)
    assert isinstance(backbone.stem, BasicStem)
    assert backbone.stem.conv1.weight.shape == (128, 3, 7, 7)
    assert all(isinstance(block, DeformBottleneckBlock) for block in backbone.res5)
    assert not any(isinstance(block, DeformBottleneckBlock) for block in backbone.res4)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("STEM_TYPE", "fancy", "STEM_TYPE"),
        ("DEPTH", 34, "DEPTH"),
        ("RES4_DILATION", 4, "RES4_DILATION"),
        ("RES5_DILATION", 3, "RES5_DILATION"),
        ("RES4_DILATION", 2, "RES5_DILATION = 4"),
        ("RES5_MULTI_GRID", [1, 2], "RES5_MULTI_GRID"),
        ("OUT_FEATURES", ["stem", "res5"], "OUT_FEATURES"),
    ],
)
def test_invalid_configs_are_refused(key, value, message):
    cfg = _r101c_cfg()
    cfg.MODEL.RESNETS[key] = value
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        build_resnet_deeplab_backbone(cfg, ShapeSpec(channels=3))
