"""The optional SAM refinement: the matching rules, SAM geometry from checkpoints, the worker flag."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import yaml
from conftest import GOLDEN
from PIL import Image
from segment_anything import sam_model_registry
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from ovss_car.car import PassResult, assign_labels
from ovss_car.config import load_config
from ovss_car.sam import (
    SamRefiner,
    SamSettings,
    build_sam,
    intersection_over_minimum,
    matched_union,
    refine_masks,
    sam_geometry,
)
from ovss_car.zoo import SAM_WEIGHTS
from ovss_common.checkpoints import CheckpointError
from ovss_common.outputs import read_label_map
from ovss_common.testing import WorkerClient, error_of

NO_CLASS = 65535
#: Generator settings under which a random tiny SAM still yields masks.
PERMISSIVE = SamSettings(
    points_per_side=4,
    pred_iou_thresh=-1e9,
    stability_score_thresh=-1e9,
    box_nms_thresh=1.0,
    iom_thres=0.5,
    min_pred_threshold=0.05,
    matching_thresh=0.3,
)


def _tiny_sam() -> Sam:
    """A seeded SAM of test size: 2 encoder blocks (the second global), 2 heads of 16."""
    torch.manual_seed(0)
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=32,
            img_size=1024,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=14,
            out_chans=32,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32,
            image_embedding_size=(64, 64),
            input_image_size=(1024, 1024),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64, num_heads=8),
            transformer_dim=32,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


@pytest.fixture(scope="module")
def tiny_sam_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(_tiny_sam().state_dict(), path)
    return path


def _rows(*rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows], np.float32)


CAR_MASK = _rows("####", "####", "....", "....")
TOP_ROW = _rows("####", "....", "....", "....")
CORNER = _rows("....", "....", "....", "...#")
EVERYTHING = _rows("####", "####", "####", "####")


def test_iom_is_the_larger_overlap_fraction():
    sam = np.stack([TOP_ROW, CORNER, EVERYTHING]).astype(bool)
    # TOP_ROW: ∩ = 4 -> 4/4 of SAM, 4/8 of CaR; CORNER: no overlap; EVERYTHING: 8/16, 8/8.
    np.testing.assert_allclose(intersection_over_minimum(CAR_MASK, sam, 0.05), [1.0, 0.0, 1.0])


def test_iom_ignores_sam_coverage_when_the_car_mask_is_barely_covered():
    sam = np.stack([TOP_ROW, EVERYTHING]).astype(bool)
    # TOP_ROW covers half of the CaR mask, below 0.6, so only ∩/|CaR| = 0.5 counts.
    np.testing.assert_allclose(intersection_over_minimum(CAR_MASK, sam, 0.6), [0.5, 1.0])


def test_matched_union_keeps_masks_above_the_threshold_else_the_best():
    sam = np.stack([TOP_ROW, CORNER]).astype(bool)
    strict = SamSettings(iom_thres=0.9, min_pred_threshold=0.05)
    np.testing.assert_array_equal(matched_union(CAR_MASK, sam, strict), TOP_ROW.astype(bool))
    none_pass = SamSettings(iom_thres=1.0, min_pred_threshold=0.05)
    np.testing.assert_array_equal(matched_union(CAR_MASK, sam, none_pass), TOP_ROW.astype(bool))
    loose = SamSettings(iom_thres=-1.0, min_pred_threshold=0.05)
    both = np.logical_or(TOP_ROW, CORNER)
    np.testing.assert_array_equal(matched_union(CAR_MASK, sam, loose), both)


def test_a_mask_is_replaced_only_when_the_union_agrees_with_it():
    masks = np.stack([CAR_MASK, np.zeros_like(CAR_MASK), CORNER])
    sam = np.stack([TOP_ROW]).astype(bool)
    # CAR_MASK vs TOP_ROW: IoU 0.5; CORNER vs TOP_ROW: IoU 0; the empty mask stays empty.
    replaced = refine_masks(masks, sam, SamSettings(iom_thres=0.5, matching_thresh=0.4))
    np.testing.assert_array_equal(replaced, np.stack([TOP_ROW, masks[1], CORNER]))
    kept = refine_masks(masks, sam, SamSettings(iom_thres=0.5, matching_thresh=0.5))
    np.testing.assert_array_equal(kept, masks)
    np.testing.assert_array_equal(refine_masks(masks, sam[:0], SamSettings()), masks)


@pytest.mark.parametrize(
    ("model_type", "dim", "heads", "global_blocks"),
    [
        ("vit_b", 768, 12, (2, 5, 8, 11)),
        ("vit_l", 1024, 16, (5, 11, 17, 23)),
        ("vit_h", 1280, 16, (7, 15, 23, 31)),
    ],
)
def test_geometry_of_the_official_sizes_is_read_from_their_shapes(
    model_type, dim, heads, global_blocks
):
    with torch.device("meta"):
        state = sam_model_registry[model_type]().state_dict()
    geometry = sam_geometry(state, f"sam_{model_type}.pth")
    assert (geometry.embed_dim, geometry.num_heads) == (dim, heads)
    assert geometry.global_attn_indexes == global_blocks
    assert (geometry.window_size, geometry.patch_size, geometry.mlp_ratio) == (14, 16, 4.0)
    assert (geometry.prompt_dim, geometry.decoder_depth, geometry.decoder_mlp_dim) == (
        256,
        2,
        2048,
    )


def test_a_tiny_checkpoint_rebuilds_the_same_model(tiny_sam_path):
    reference = _tiny_sam()
    model = build_sam(torch.load(tiny_sam_path, weights_only=True), tiny_sam_path)
    assert model.image_encoder.blocks[0].attn.num_heads == 2
    assert [block.window_size for block in model.image_encoder.blocks] == [14, 0]
    image = torch.rand(1, 3, 1024, 1024)
    with torch.no_grad():
        torch.testing.assert_close(model.image_encoder(image), reference.image_encoder(image))


def test_tiny_checkpoint_loads_and_generates_masks(tiny_sam_path):
    refiner = SamRefiner(tiny_sam_path, PERMISSIVE, "cpu")
    rgb = (np.random.RandomState(0).rand(48, 64, 3) * 255).astype(np.uint8)
    masks = refiner.sam_masks(rgb)
    assert masks.dtype == bool and masks.shape[1:] == (48, 64) and len(masks) > 0


def test_hq_sam_and_foreign_checkpoints_are_refused_in_one_line(tmp_path):
    state = _tiny_sam().state_dict()
    with pytest.raises(CheckpointError, match="HQ-SAM"):
        build_sam({**state, "mask_decoder.hf_token.weight": torch.zeros(1, 32)}, "hq.pth")
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        build_sam({"visual.proj": torch.zeros(2, 2)}, "clip.pth")
    del state["mask_decoder.iou_token.weight"]
    with pytest.raises(CheckpointError, match="missing keys"):
        build_sam(state, "cut.pth")


def test_config_sam_section_and_zoo_entries():
    settings = load_config(GOLDEN / "configs" / "custom_chelsea.yaml").sam_settings()
    assert settings.matching_thresh == 0.9
    official = load_config(
        GOLDEN.parent.parent / "src" / "ovss_car" / "configs" / "voc.yaml"
    ).sam_settings()
    assert (official.points_per_side, official.iom_thres, official.min_pred_threshold) == (
        64,
        0.6,
        0.05,
    )
    assert SAM_WEIGHTS["vit_h"].filename == "sam_vit_h_4b8939.pth"
    assert SAM_WEIGHTS["vit_h"].md5_prefix == "4b8939"


def _load(client, **options):
    return client.ask(
        "load",
        config=str(GOLDEN / "configs" / "custom_chelsea.yaml"),
        weights=str(GOLDEN),
        device="cpu",
        threads=2,
        options=options,
    )


def test_worker_refines_every_pass_with_sam(golden_case, tiny_sam_path, tmp_path):
    case = golden_case("custom_chelsea")
    path = tmp_path / "chelsea.png"
    Image.fromarray(case["image"]).save(path)
    config = tmp_path / "chelsea_sam.yaml"
    sections = yaml.safe_load((GOLDEN / "configs" / "custom_chelsea.yaml").read_text())
    sections["sam"].update(
        points_per_side=PERMISSIVE.points_per_side,
        pred_iou_thresh=PERMISSIVE.pred_iou_thresh,
        stability_score_thresh=PERMISSIVE.stability_score_thresh,
        box_nms_thresh=PERMISSIVE.box_nms_thresh,
        matching_thresh=PERMISSIVE.matching_thresh,
    )
    config.write_text(yaml.safe_dump(sections))
    client = WorkerClient("ovss_car.worker")
    try:
        loaded = client.ask(
            "load",
            config=str(config),
            weights=str(GOLDEN),
            device="cpu",
            threads=2,
            options={"sam": str(tiny_sam_path)},
        )
        assert loaded["ok"], loaded
        assert loaded["result"]["sam_checkpoint"] == str(tiny_sam_path)
        reply = client.ask(
            "segment",
            image=str(path),
            vocabulary=case.json("vocabulary"),
            output_prefix=str(tmp_path / "out"),
        )
    finally:
        client.close()
    assert reply["ok"], reply
    assert "sam" in reply["result"]["timing"]
    refiner = SamRefiner(tiny_sam_path, load_config(config).sam_settings(), "cpu")
    refined = refine_masks(case["final_masks"], refiner.sam_masks(case["image"]), refiner.settings)
    assert not np.array_equal(refined, case["final_masks"])
    result = PassResult(refined, case["final_scores"])
    expected = assign_labels([(result, list(range(len(refined))))], refined.shape[1:], NO_CLASS)
    labels = read_label_map(reply["result"]["label_map"])
    assert (labels == expected).mean() >= 0.995


def test_worker_sam_option_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path))
    client = WorkerClient("ovss_car.worker")
    try:
        error = error_of(_load(client, sam=str(tmp_path / "missing.pth")))
        assert error["type"] == "bad_checkpoint" and "missing.pth" in error["message"]
        error = error_of(_load(client, sam=3))
        assert error["type"] == "bad_option"
        error = error_of(_load(client, sam=True))
        assert error["type"] == "bad_checkpoint" and "sam_vit_h_4b8939.pth" in error["message"]
    finally:
        client.close()
