"""Fidelity of the Swin backbone against the upstream golden features, and its layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from detectron2.config import CfgNode
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.structures import ImageList

from ovss_ovseg.backbone.swin import SwinTransformer

GOLDEN = Path(__file__).resolve().parent / "golden"
FULL = Path(__file__).resolve().parent / "golden_full"
CASES = sorted(path.stem for path in (GOLDEN / "cases").glob("*.npz"))
LEVELS = ("res2", "res3", "res4", "res5")
RTOL = 1e-5
ATOL_PER_ELEMENT = 1e-5
ELEMENTWISE_ATOL = 1e-3


def _config() -> dict:
    return yaml.safe_load((GOLDEN / "config.yaml").read_text())


def _swin_kwargs(swin: dict) -> dict:
    """Plain-constructor arguments from a ``MODEL.SWIN`` mapping."""
    return {
        "patch_size": swin["PATCH_SIZE"],
        "embed_dim": swin["EMBED_DIM"],
        "depths": swin["DEPTHS"],
        "num_heads": swin["NUM_HEADS"],
        "window_size": swin["WINDOW_SIZE"],
        "mlp_ratio": swin["MLP_RATIO"],
        "qkv_bias": swin["QKV_BIAS"],
        "qk_scale": swin["QK_SCALE"],
        "patch_norm": swin["PATCH_NORM"],
        "out_features": swin["OUT_FEATURES"],
    }


def _backbone_state_dict() -> dict[str, torch.Tensor]:
    saved = torch.load(GOLDEN / "checkpoint.pth", weights_only=True)["model"]
    prefix = "backbone."
    return {key[len(prefix) :]: value for key, value in saved.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def tiny_swin() -> SwinTransformer:
    model = SwinTransformer(**_swin_kwargs(_config()["MODEL"]["SWIN"]))
    model.load_state_dict(_backbone_state_dict(), strict=True)
    return model.eval()


def _backbone_input(image: np.ndarray, config: dict) -> torch.Tensor:
    """The meta-architecture's backbone input [1, 3, Hp, Wp] for an RGB uint8 [H0, W0, 3] image."""
    inputs = config["INPUT"]
    resize = ResizeShortestEdge(
        [inputs["MIN_SIZE_TEST"], inputs["MIN_SIZE_TEST"]], inputs["MAX_SIZE_TEST"], "choice"
    )
    resized = resize.get_transform(image).apply_image(image)
    pixels = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
    mean = torch.tensor(config["MODEL"]["PIXEL_MEAN"]).view(3, 1, 1)
    std = torch.tensor(config["MODEL"]["PIXEL_STD"]).view(3, 1, 1)
    divisibility = config["MODEL"]["MASK_FORMER"]["SIZE_DIVISIBILITY"]
    return ImageList.from_tensors([(pixels - mean) / std], divisibility).tensor


def _assert_sums_close(ours: np.ndarray, golden: np.ndarray, elements: int, what: str) -> None:
    """Relative tolerance on per-channel sums, absolute (per element) where a sum is near 0."""
    np.testing.assert_allclose(
        ours, golden, rtol=RTOL, atol=ATOL_PER_ELEMENT * elements, err_msg=what
    )


def test_backbone_input_uses_the_imagenet_statistics():
    """MODEL.PIXEL_MEAN/STD are the ImageNet statistics x 255, not CLIP's (the CLIP adapter
    normalises its region crops separately)."""
    model = _config()["MODEL"]
    np.testing.assert_allclose(model["PIXEL_MEAN"], np.array([0.485, 0.456, 0.406]) * 255)
    np.testing.assert_allclose(model["PIXEL_STD"], np.array([0.229, 0.224, 0.225]) * 255)


@pytest.mark.parametrize("case", CASES)
def test_features_match_upstream(case: str, tiny_swin: SwinTransformer):
    torch.set_num_threads(2)
    with np.load(GOLDEN / "cases" / f"{case}.npz") as data:
        golden = {key: data[key] for key in data.files}
    x = _backbone_input(golden["image"], _config())
    assert list(x.shape) == golden["input_tensor_shape"].tolist()
    height, width = golden["resized_hw"].tolist()
    assert not x[..., height:, :].any() and not x[..., :, width:].any()
    np.testing.assert_allclose(
        x.double().sum((0, 2, 3)).numpy(), golden["input_tensor_channel_sum"], rtol=RTOL
    )

    with torch.no_grad():
        features = tiny_swin(x)

    assert sorted(features) == list(LEVELS)
    for level in LEVELS:
        feature = features[level][0].double()
        assert list(feature.shape) == golden[f"{level}_shape"].tolist(), level
        elements = feature.shape[1] * feature.shape[2]
        _assert_sums_close(
            feature.sum((1, 2)).numpy(), golden[f"{level}_channel_sum"], elements, level
        )
        _assert_sums_close(
            feature.square().sum((1, 2)).numpy(),
            golden[f"{level}_channel_sumsq"],
            elements,
            f"{level} sum of squares",
        )
        if level in golden:
            np.testing.assert_allclose(
                feature.float().numpy(), golden[level], rtol=0, atol=ELEMENTWISE_ATOL, err_msg=level
            )


def test_state_dict_matches_the_golden_checkpoint(tiny_swin: SwinTransformer):
    saved = _backbone_state_dict()
    fresh = SwinTransformer(**_swin_kwargs(_config()["MODEL"]["SWIN"])).state_dict()
    assert list(fresh) == list(saved)
    for key, tensor in fresh.items():
        assert tensor.shape == saved[key].shape, key
        assert tensor.dtype == saved[key].dtype, key
        if key.endswith("relative_position_index"):
            assert torch.equal(tensor, saved[key]), key


def test_full_size_layout_matches_the_released_swin_b():
    manifest = json.loads((FULL / "ovseg_swinbase_vitL14_ft_mpt.json").read_text())
    prefix = "backbone."
    released = {
        entry["key"][len(prefix) :]: entry["shape"]
        for entry in manifest["state_dict"]
        if entry["key"].startswith(prefix)
    }
    swin = yaml.safe_load(manifest["resolved_config"])["MODEL"]["SWIN"]
    with torch.device("meta"):
        model = SwinTransformer(**_swin_kwargs(swin))
    ours = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    assert list(ours) == list(released)
    assert ours == released
    assert (
        sum(np.prod(shape) for shape in ours.values()) == manifest["numel_per_prefix"]["backbone"]
    )


_REGISTRY_KEYS = (
    "PRETRAIN_IMG_SIZE",
    "PATCH_SIZE",
    "EMBED_DIM",
    "DEPTHS",
    "NUM_HEADS",
    "WINDOW_SIZE",
    "MLP_RATIO",
    "QKV_BIAS",
    "QK_SCALE",
    "DROP_RATE",
    "ATTN_DROP_RATE",
    "DROP_PATH_RATE",
    "APE",
    "PATCH_NORM",
    "OUT_FEATURES",
)


def _cfg_node(config: dict) -> CfgNode:
    swin = config["MODEL"]["SWIN"]
    return CfgNode(
        {
            "MODEL": {
                "BACKBONE": {"NAME": "D2SwinTransformer", "FREEZE_AT": 0},
                "PIXEL_MEAN": config["MODEL"]["PIXEL_MEAN"],
                "PIXEL_STD": config["MODEL"]["PIXEL_STD"],
                "SWIN": {key: swin[key] for key in _REGISTRY_KEYS},
            }
        }
    )


def test_registry_builder_reads_the_config(tiny_swin: SwinTransformer):
    config = _config()
    cfg = _cfg_node(config)
    cfg.MODEL.SWIN.USE_CHECKPOINT = False
    assert "D2SwinTransformer" in BACKBONE_REGISTRY
    model = build_backbone(cfg)
    assert isinstance(model, SwinTransformer)
    assert model.size_divisibility == 32
    assert model.output_shape() == {
        "res2": ShapeSpec(channels=12, stride=4),
        "res3": ShapeSpec(channels=24, stride=8),
        "res4": ShapeSpec(channels=48, stride=16),
        "res5": ShapeSpec(channels=96, stride=32),
    }
    model.load_state_dict(_backbone_state_dict(), strict=True)
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, reference = model(x), tiny_swin(x)
    for level in LEVELS:
        assert torch.equal(ours[level], reference[level]), level


@pytest.mark.parametrize(
    ("key", "value"), [("APE", True), ("NORM_INDICES", [3]), ("PROJECTION", True)]
)
def test_registry_builder_refuses_architectures_ovseg_never_uses(key: str, value):
    cfg = _cfg_node(_config())
    cfg.MODEL.SWIN[key] = value
    with pytest.raises(ValueError, match=f"MODEL.SWIN.{key}"):
        build_backbone(cfg)


def test_out_features_select_levels(tiny_swin: SwinTransformer):
    kwargs = _swin_kwargs(_config()["MODEL"]["SWIN"]) | {"out_features": ["res3", "res5"]}
    model = SwinTransformer(**kwargs)
    model.load_state_dict(_backbone_state_dict(), strict=True)
    model.eval()
    assert set(model.output_shape()) == {"res3", "res5"}
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        ours, reference = model(x), tiny_swin(x)
    assert sorted(ours) == ["res3", "res5"]
    assert ours["res3"].shape == (2, 24, 6, 9)
    assert ours["res5"].shape == (2, 96, 2, 3)
    for level in ours:
        assert torch.equal(ours[level], reference[level]), level


def test_batch_items_are_independent(tiny_swin: SwinTransformer):
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        batched = tiny_swin(x)
        single = tiny_swin(x[1:])
    for level in LEVELS:
        torch.testing.assert_close(batched[level][1:], single[level], rtol=1e-5, atol=1e-5)


def test_rejects_non_image_input(tiny_swin: SwinTransformer):
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        tiny_swin(torch.zeros(3, 64, 64))
