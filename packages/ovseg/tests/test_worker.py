"""The OVSeg worker over the protocol: golden outputs, and bad input answered in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CHECKPOINT, CONFIG, CONFIG_DEMO
from PIL import Image

from ovss_common.outputs import read_label_map
from ovss_common.testing import WorkerClient, error_of, loaded_worker


@pytest.fixture(scope="module")
def worker():
    load = {"config": str(CONFIG), "weights": str(CHECKPOINT), "device": "cpu", "threads": 2}
    with loaded_worker("ovss_ovseg.worker", **load) as client:
        yield client


def _segment(worker, path, vocabulary, prefix, save_scores=False):
    return worker.ask(
        "segment",
        image=str(path),
        vocabulary=vocabulary,
        output_prefix=str(prefix),
        save_scores=save_scores,
    )


def test_segment_reproduces_the_golden_scores(worker, golden_case, tmp_path):
    case = golden_case("chelsea_custom3")
    path = tmp_path / "chelsea.png"
    Image.fromarray(case["image"]).save(path)
    reply = _segment(worker, path, case.vocabulary, tmp_path / "out" / "chelsea", save_scores=True)
    assert reply["ok"], reply
    with np.load(reply["result"]["scores"]) as saved:
        assert np.abs(saved["scores"] - case["scores"]).max() <= 1e-3
    labels = read_label_map(reply["result"]["label_map"])
    assert (labels == case["label"]).mean() >= 0.998


def test_demo_single_name_gets_others(golden_case, tmp_path):
    case = golden_case("demo_rocket_single")
    path = tmp_path / "rocket.png"
    Image.fromarray(case["image"]).save(path)
    client = WorkerClient("ovss_ovseg.worker")
    try:
        loaded = client.ask(
            "load", config=str(CONFIG_DEMO), weights=str(CHECKPOINT), device="cpu", pipeline="demo"
        )
        assert loaded["ok"], loaded
        reply = _segment(client, path, ["car"], tmp_path / "rocket", save_scores=True)
        assert reply["ok"], reply
        assert reply["result"]["effective_vocabulary"] == ["car", "others"]
        with np.load(reply["result"]["scores"]) as saved:
            assert np.abs(saved["scores"] - case["scores"]).max() <= 1e-3
        labels = read_label_map(reply["result"]["label_map"])
        assert set(np.unique(labels)) <= {0, 1, 65535}
    finally:
        client.close()


@pytest.mark.parametrize(
    ("mode", "array"),
    [
        ("L", np.full((40, 60), 128, np.uint8)),
        ("RGBA", np.full((40, 60, 4), 200, np.uint8)),
        ("I16", np.full((40, 60), 40000, np.uint16)),
    ],
)
def test_odd_image_modes_are_segmented(worker, tmp_path, mode, array):
    path = tmp_path / f"odd_{mode}.png"
    Image.fromarray(array).save(path)
    reply = _segment(worker, path, ["cat", "wall"], tmp_path / "o")
    assert reply["ok"], reply
    assert (reply["result"]["height"], reply["result"]["width"]) == (40, 60)


def test_bad_image_and_vocabularies(worker, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert error_of(_segment(worker, bad, ["cat"], tmp_path / "b"))["type"] == "bad_image"
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(good)
    for vocabulary in ([], ["cat", "cat"], ["cat", " "]):
        assert (
            error_of(_segment(worker, good, vocabulary, tmp_path / "v"))["type"] == "bad_vocabulary"
        )
    too_long = ["cat " * 100]
    assert (
        error_of(_segment(worker, good, [too_long[0].strip()], tmp_path / "l"))["type"]
        == "bad_vocabulary"
    )
    assert worker.ask("ping")["ok"], "the worker keeps serving"


def test_bad_loads(tmp_path, monkeypatch):
    san_like = tmp_path / "san.pth"
    torch.save({"model": {"side_adapter_network.query_embed": torch.zeros(1, 2, 3)}}, san_like)
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    client = WorkerClient("ovss_ovseg.worker")
    try:
        error = error_of(
            client.ask("load", config=str(CONFIG), weights=str(san_like), device="cpu")
        )
        assert error["type"] == "bad_checkpoint" and "not an OVSeg checkpoint" in error["message"]
        error = error_of(client.ask("load", device="cpu"))
        assert error["type"] == "bad_checkpoint"
        assert "ovseg_swinbase_vitL14_ft_mpt.pth" in error["message"]
        error = error_of(
            client.ask("load", config=str(CONFIG), device="cpu", options={"ensemble_weight": 2})
        )
        assert error["type"] == "bad_option"
    finally:
        client.close()
