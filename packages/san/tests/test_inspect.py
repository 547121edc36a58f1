"""``inspect`` over the worker protocol on the golden tiny SAN: parameters, stages, shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CHECKPOINT, CONFIG
from PIL import Image
from torch import nn

from ovss_common.inspection import StageRecorder, parameter_rows
from ovss_common.testing import check_inspection, error_of, inspect_image, loaded_worker
from ovss_san.build import build_san
from ovss_san.config import get_config
from ovss_san.inspection import trained
from ovss_san.models import MODELS

VOCABULARY = ["cat", "wall", "floor"]
GOLDEN_FULL = Path(__file__).resolve().parent / "golden_full"


@pytest.fixture(scope="module")
def worker():
    load = {"config": str(CONFIG), "weights": str(CHECKPOINT), "device": "cpu", "threads": 2}
    with loaded_worker("ovss_san.worker", **load) as client:
        yield client


@pytest.fixture(scope="module")
def inspected(worker, golden_case, tmp_path_factory):
    image = golden_case("chelsea_custom3")["image"]
    result = inspect_image(worker, image, VOCABULARY, tmp_path_factory.mktemp("inspect"))
    return result, image.shape[:2]


def test_parameters_add_up_to_the_model(inspected, tiny_model):
    result, _ = inspected
    model, _ = tiny_model()
    check_inspection(result, sum(p.numel() for p in model.parameters()))
    # The builder freezes what SAN's training froze: an account independent of ``trained``.
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < result["parameters"]["trainable"] == expected < result["parameters"]["total"]
    side = next(r for r in result["parameters"]["rows"] if r["module"] == "side_adapter_network")
    assert side["frozen"] == 0


@pytest.mark.parametrize("name", sorted(MODELS.models))
def test_trained_parameters_are_those_of_the_original_build(name):
    """At full size, ``trained`` counts the trainable parameters recorded from the original
    build (``golden_full/<model>.json``), per top-level module."""
    recorded = json.loads((GOLDEN_FULL / f"{name}.json").read_text())["trainable_parameters"]
    config = MODELS.entry(name).config
    with torch.device("meta"):
        model = build_san(get_config(config), config.parent)
    table = parameter_rows(model, trained)
    assert table["trainable"] == recorded["count"] > 0
    top = {row["module"]: row["trainable"] for row in table["rows"] if row["depth"] == 1}
    assert {module: count for module, count in top.items() if count} == recorded["per_prefix"]


def test_network_stages_count_flops(inspected):
    result, _ = inspected
    flops = {stage["stage"]: stage["flops"] for stage in result["stages"]}
    network = [name for name in flops if not name.startswith(("resize", "normalise"))]
    assert len(network) == 8
    assert all(flops[name] > 0 for name in network), flops


def test_shapes_are_consistent(inspected):
    result, (height, width) = inspected
    shapes = {row["tensor"]: row["shape"] for row in result["shapes"]}
    b, q, h, w = shapes["mask logits"]
    assert shapes["attention biases"][2:] == [q, h, w]
    classes = len(VOCABULARY)
    assert shapes["mask-class logits"] == [b, q, classes + 1]
    assert shapes["class weights"][0] == classes + 1
    assert shapes["class weights"][1] == shapes["mask embeddings"][2]
    assert shapes["scores"] == [classes, height, width]
    assert shapes["label map"] == [height, width]


def test_cost_grows_with_the_vocabulary(inspected):
    result, _ = inspected
    rows = {row["stage"]: row for row in result["scaling"]["rows"]}
    text = rows["text encoder: class embeddings"]["flops"]
    assert text[1] > text[0] > 0
    for row in rows.values():
        if not row["per_class"]:
            assert row["flops"][0] == row["flops"][1], row
    assert result["scaling"]["flops_per_class"] > 0


def test_inspect_options_are_checked(worker, tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(path)
    reply = worker.ask("inspect", image=str(path), vocabulary=["cat"], options={"x": 1})
    assert error_of(reply)["type"] == "bad_option"


def test_random_weights_build_without_a_checkpoint(worker):
    reply = worker.ask("load", config=str(CONFIG), device="cpu", options={"random_weights": True})
    assert reply["ok"], reply
    assert reply["result"]["random_weights"] is True
    assert reply["result"]["weights"] is None
    both = worker.ask(
        "load",
        config=str(CONFIG),
        weights=str(CHECKPOINT),
        device="cpu",
        options={"random_weights": True},
    )
    assert error_of(both)["type"] == "bad_option"
    assert worker.ask("load", config=str(CONFIG), weights=str(CHECKPOINT), device="cpu")["ok"]


def test_fused_attention_kernels_are_counted():
    """The CPU fast paths of ``nn.MultiheadAttention`` and ``scaled_dot_product_attention``
    count what their explicit computation counts."""
    attention = nn.MultiheadAttention(64, 4, batch_first=True).eval()
    x = torch.randn(2, 30, 64)
    recorder = StageRecorder()
    with torch.no_grad():
        with recorder.stage("fast"):
            attention(x, x, x, need_weights=False)
        with recorder.stage("explicit"):
            attention(x, x, x, need_weights=True)
        q = torch.randn(2, 4, 30, 16)
        with recorder.stage("sdpa"):
            nn.functional.scaled_dot_product_attention(q, q, q)
        with recorder.stage("sdpa explicit"):
            (q @ q.transpose(-1, -2)).softmax(-1) @ q
    stages = recorder.stages
    assert stages["fast"].flops == stages["explicit"].flops > 0
    assert stages["sdpa"].flops == stages["sdpa explicit"].flops > 0


def test_parameter_rows_of_a_shared_module():
    shared = nn.Linear(3, 4)
    model = nn.ModuleDict({"a": shared, "b": nn.Sequential(shared, nn.Linear(4, 2))})
    table = parameter_rows(model, lambda name: name.startswith("b."))
    assert table["total"] == 16 + 10
    assert [row["module"] for row in table["rows"] if row["depth"] == 1] == ["a", "b"]
