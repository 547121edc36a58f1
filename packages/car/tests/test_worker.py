"""The CaR worker over the protocol: golden label maps, stuff pass, bad input in one line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import GOLDEN
from PIL import Image

from ovss_car.worker import CarMethod
from ovss_common.outputs import read_label_map
from ovss_common.prompts import VILD_TEMPLATES
from ovss_common.protocol import LoadRequest, WorkerError
from ovss_common.testing import WorkerClient, error_of

NO_CLASS = 65535


def _load(client, case: str):
    return client.ask(
        "load",
        config=str(GOLDEN / "configs" / f"{case}.yaml"),
        weights=str(GOLDEN),
        device="cpu",
        threads=2,
    )


@pytest.fixture(scope="module")
def worker():
    client = WorkerClient("ovss_car.worker")
    assert _load(client, "custom_chelsea")["ok"]
    yield client
    client.close()


def _golden_labels(case) -> np.ndarray:
    """The original's label map (0 unassigned, index + 1) in the protocol's convention."""
    labels = case["label_map"].astype(np.int64) - 1
    labels[labels < 0] = NO_CLASS
    return labels


def test_segment_reproduces_the_golden_label_map(worker, golden_case, tmp_path):
    case = golden_case("custom_chelsea")
    path = tmp_path / "chelsea.png"
    Image.fromarray(case["image"]).save(path)
    reply = worker.ask(
        "segment",
        image=str(path),
        vocabulary=case.json("vocabulary"),
        output_prefix=str(tmp_path / "out" / "chelsea"),
        save_scores=True,
    )
    assert reply["ok"], reply
    labels = read_label_map(reply["result"]["label_map"])
    assert (labels == _golden_labels(case)).mean() >= 0.995
    with np.load(reply["result"]["scores"]) as saved:
        scores = saved["scores"]
    expected = case["final_masks"] * case["final_scores"][:, None, None]
    assert (np.abs(scores - expected) <= 1e-3).mean() >= 0.995


def test_stuff_pass_through_the_protocol(golden_case, tmp_path):
    case = golden_case("ade_coffee")
    things, stuff = case.json("vocabulary"), case.json("stuff_vocabulary")
    path = tmp_path / "coffee.png"
    Image.fromarray(case["image"]).save(path)
    client = WorkerClient("ovss_car.worker")
    try:
        assert _load(client, "ade_coffee")["ok"]
        reply = client.ask(
            "segment",
            image=str(path),
            vocabulary=things + stuff,
            stuff=stuff,
            output_prefix=str(tmp_path / "coffee"),
        )
        assert reply["ok"], reply
        labels = read_label_map(reply["result"]["label_map"])
        ids = case["thing_id_mapping"].tolist() + case["stuff_id_mapping"].tolist()
        expected = np.full(labels.shape, NO_CLASS, np.int64)
        golden = case["label_map"]
        for position, dataset_id in enumerate(ids):
            expected[golden == dataset_id + 1] = position
        assert (labels == expected).mean() >= 0.995
    finally:
        client.close()


def test_bad_input(worker, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    reply = worker.ask(
        "segment", image=str(bad), vocabulary=["cat"], output_prefix=str(tmp_path / "b")
    )
    assert error_of(reply)["type"] == "bad_image"
    good = tmp_path / "gray.png"
    Image.fromarray(np.full((32, 48), 90, np.uint8)).save(good)
    reply = worker.ask(
        "segment", image=str(good), vocabulary=["cat", "dog"], output_prefix=str(tmp_path / "g")
    )
    assert reply["ok"], reply
    reply = worker.ask("segment", image=str(good), vocabulary=[], output_prefix=str(tmp_path / "e"))
    assert error_of(reply)["type"] == "bad_vocabulary"


def test_bad_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    other = tmp_path / "weights"
    other.mkdir()
    torch.save(
        {"model": {"side_adapter_network.query_embed": torch.zeros(1)}}, other / "cam_clip.pth"
    )
    torch.save(
        {"model": {"side_adapter_network.query_embed": torch.zeros(1)}}, other / "sem_clip.pth"
    )
    client = WorkerClient("ovss_car.worker")
    try:
        error = error_of(
            client.ask(
                "load", config=str(GOLDEN / "configs" / "voc20_voc.yaml"), weights=str(other)
            )
        )
        assert error["type"] == "bad_checkpoint" and "not an OpenAI-format" in error["message"]
        error = error_of(client.ask("load", device="cpu"))
        assert error["type"] == "bad_checkpoint" and "ViT-B-16.pt" in error["message"]
        error = error_of(client.ask("load", config=str(tmp_path / "absent.yaml")))
        assert error["type"] == "bad_config"
    finally:
        client.close()


def test_harmonised_options_replace_templates_and_keep_voc_names():
    method = CarMethod()
    request = LoadRequest(
        config=str(GOLDEN / "configs" / "voc20_voc.yaml"),
        weights=str(GOLDEN),
        device="cpu",
        threads=2,
        options={"semantic_templates": ["a photo of a {}.", "a {}."], "voc_names": False},
    )
    method.load(request)
    assert method.config.pass_settings().semantic_templates == ("a photo of a {}.", "a {}.")
    assert not method.renames_voc
    method.load(dataclasses.replace(request, options={"semantic_templates": "vild"}))
    assert method.config.pass_settings().semantic_templates == VILD_TEMPLATES
    assert len(VILD_TEMPLATES) == 14
    method.load(dataclasses.replace(request, options={}))
    assert method.renames_voc and len(method.config.pass_settings().semantic_templates) == 15
    for bad in ([], ["no placeholder"], "a {}", "VILD", 3):
        with pytest.raises(WorkerError, match="semantic_templates"):
            method.load(dataclasses.replace(request, options={"semantic_templates": bad}))
