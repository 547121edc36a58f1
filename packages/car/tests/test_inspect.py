"""``inspect`` over the worker protocol on the golden tiny CaR: parameters, stages, shapes."""

from __future__ import annotations

import pytest
from conftest import GOLDEN

from ovss_common.testing import check_inspection, error_of, inspect_image, loaded_worker

CONFIG = GOLDEN / "configs" / "voc20_voc.yaml"
VOCABULARY = ["cat", "wall", "floor"]


@pytest.fixture(scope="module")
def worker():
    load = {"config": str(CONFIG), "weights": str(GOLDEN), "device": "cpu", "threads": 2}
    with loaded_worker("ovss_car.worker", **load) as client:
        yield client


@pytest.fixture(scope="module")
def inspected(worker, golden_case, tmp_path_factory):
    image = golden_case("custom_chelsea")["image"]
    result = inspect_image(worker, image, VOCABULARY, tmp_path_factory.mktemp("inspect"))
    return result, image.shape[:2]


def test_parameters_add_up_to_the_clips(inspected, tiny_clips):
    result, _ = inspected
    total = sum(p.numel() for clip in tiny_clips for p in clip.parameters())
    check_inspection(result, total)
    assert result["parameters"]["trainable"] == 0


def test_model_stages_count_flops(inspected):
    result, _ = inspected
    flops = {stage["stage"]: stage["flops"] for stage in result["stages"]}
    network = [
        name
        for name in flops
        if name.startswith(("CAM text", "CAM image", "Grad-CAM", "classifier image"))
        or name.startswith("classifier text")
    ]
    assert len(network) == 5
    assert all(flops[name] > 0 for name in network), flops
    calls = {stage["stage"]: stage["calls"] for stage in result["stages"]}
    assert calls["DenseCRF"] == 1


def test_shapes_are_consistent(inspected):
    result, (height, width) = inspected
    shapes = {row["tensor"]: row["shape"] for row in result["shapes"]}
    texts = shapes["step 1: CAM masks"][0]
    assert texts == len(VOCABULARY)
    assert shapes["step 1: CAM masks"][1:] == [height, width]
    assert shapes["step 1: classifier scores S"] == [texts, texts]
    assert shapes["final masks"] == [len(VOCABULARY), height, width]
    assert shapes["label map"] == [height, width]


def test_cost_grows_with_the_vocabulary(inspected):
    result, _ = inspected
    rows = {row["stage"]: row for row in result["scaling"]["rows"]}
    gradcam = rows["Grad-CAM per text: last block forward + backward"]
    assert gradcam["calls"][1] > gradcam["calls"][0]
    assert result["scaling"]["total_flops"][1] > result["scaling"]["total_flops"][0]


def test_random_weights_need_official_clip_names(worker):
    reply = worker.ask("load", config=str(CONFIG), device="cpu", options={"random_weights": True})
    error = error_of(reply)
    assert error["type"] == "bad_config" and "official CLIP names" in error["message"]
    assert worker.ask("load", config=str(CONFIG), weights=str(GOLDEN), device="cpu")["ok"]
