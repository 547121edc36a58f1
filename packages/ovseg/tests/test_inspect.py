"""``inspect`` over the worker protocol on the golden tiny OVSeg: parameters, stages, shapes."""

from __future__ import annotations

import pytest
from conftest import CHECKPOINT, CONFIG

from ovss_common.testing import check_inspection, error_of, inspect_image, loaded_worker
from ovss_ovseg.build import load_ovseg
from ovss_ovseg.inspection import REGION_TOWER, trained

VOCABULARY = ["cat", "wall", "floor"]


@pytest.fixture(scope="module")
def worker():
    load = {"config": str(CONFIG), "weights": str(CHECKPOINT), "device": "cpu", "threads": 2}
    with loaded_worker("ovss_ovseg.worker", **load) as client:
        yield client


@pytest.fixture(scope="module")
def inspected(worker, golden_case, tmp_path_factory):
    image = golden_case("chelsea_custom3")["image"]
    result = inspect_image(worker, image, VOCABULARY, tmp_path_factory.mktemp("inspect"))
    return result, image.shape[:2]


def test_parameters_add_up_to_the_model(inspected):
    result, _ = inspected
    model, _ = load_ovseg(CONFIG, CHECKPOINT)
    check_inspection(result, sum(p.numel() for p in model.parameters()))
    expected = sum(p.numel() for name, p in model.named_parameters() if trained(name))
    assert result["parameters"]["trainable"] == expected
    rows = {row["module"]: row for row in result["parameters"]["rows"]}
    assert rows["clip_adapter.clip_model.visual.mask_embedding"]["frozen"] == 0
    assert rows["clip_adapter.clip_model.transformer"]["trainable"] == 0
    assert rows["backbone"]["frozen"] == 0


def test_network_stages_count_flops(inspected):
    result, _ = inspected
    flops = {stage["stage"]: stage["flops"] for stage in result["stages"]}
    network = [
        name
        for name in flops
        if name.startswith(("backbone", "pixel decoder", "transformer decoder", "text encoder"))
        or name in (REGION_TOWER, "scores = class scores x masks")
    ]
    assert len(network) == 6
    assert all(flops[name] > 0 for name in network), flops


def test_shapes_are_consistent(inspected):
    result, (height, width) = inspected
    shapes = {row["tensor"]: row["shape"] for row in result["shapes"]}
    b, q, h, w = shapes["mask logits"]
    assert shapes["mask features"][2:] == [h, w]
    assert shapes["class embeddings"][:2] == [b, q]
    classes = len(VOCABULARY)
    assert shapes["text features"] == [classes + 1, shapes["class embeddings"][2]]
    assert shapes["MaskFormer logits"] == [q, classes + 1]
    regions = shapes["region crops"][0]
    assert shapes["region crops"][1:] == [3, 224, 224]
    assert shapes["CLIP logits"] == [regions, classes + 1]
    assert shapes["scores"] == [classes, height, width]


def test_cost_grows_with_the_vocabulary(inspected):
    result, _ = inspected
    rows = {row["stage"]: row for row in result["scaling"]["rows"]}
    assert rows[REGION_TOWER]["replayed"]
    text = rows["text encoder: class embeddings"]["flops"]
    assert text[1] > text[0] > 0
    for row in rows.values():
        if not row["per_class"]:
            assert row["flops"][0] == row["flops"][1], row
    assert result["scaling"]["flops_per_class"] > 0


def test_random_weights_exclude_a_checkpoint(worker):
    reply = worker.ask(
        "load",
        config=str(CONFIG),
        weights=str(CHECKPOINT),
        device="cpu",
        options={"random_weights": True},
    )
    assert error_of(reply)["type"] == "bad_option"
    assert worker.ask("load", config=str(CONFIG), weights=str(CHECKPOINT), device="cpu")["ok"]
