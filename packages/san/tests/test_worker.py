"""The SAN worker over the protocol: golden outputs, and bad input answered in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CHECKPOINT, CONFIG
from PIL import Image

from ovss_common.outputs import read_label_map
from ovss_common.testing import WorkerClient, error_of, loaded_worker


@pytest.fixture(scope="module")
def worker():
    load = {"config": str(CONFIG), "weights": str(CHECKPOINT), "device": "cpu", "threads": 2}
    with loaded_worker("ovss_san.worker", **load) as client:
        yield client


def test_load_reports_provenance(worker):
    reply = worker.ask("ping")
    assert reply["ok"] and reply["result"]["loaded"]


def test_segment_reproduces_the_golden_scores(worker, golden_case, tmp_path):
    case = golden_case("chelsea_custom3")
    path = tmp_path / "chelsea.png"
    Image.fromarray(case["image"]).save(path)
    reply = worker.ask(
        "segment",
        image=str(path),
        vocabulary=case.vocabulary,
        output_prefix=str(tmp_path / "out" / "chelsea"),
        save_scores=True,
    )
    assert reply["ok"], reply
    outputs = reply["result"]
    with np.load(outputs["scores"]) as saved:
        scores = saved["scores"]
    excess = np.abs(scores - case["scores"]) - (5e-4 + 1e-4 * np.abs(case["scores"]))
    assert excess.max() <= 0
    labels = read_label_map(outputs["label_map"])
    assert (labels == case["label"]).mean() >= 0.999


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda p: p.write_bytes(b"not an image"), "bad_image"),
        (lambda p: None, "bad_image"),
    ],
    ids=["corrupt", "missing"],
)
def test_bad_images_are_one_line_errors(worker, tmp_path, make, what):
    path = tmp_path / "bad.png"
    make(path)
    reply = worker.ask(
        "segment", image=str(path), vocabulary=["cat"], output_prefix=str(tmp_path / "o")
    )
    assert error_of(reply)["type"] == what
    assert worker.ask("ping")["ok"], "the worker keeps serving"


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
    reply = worker.ask(
        "segment", image=str(path), vocabulary=["cat", "wall"], output_prefix=str(tmp_path / "o")
    )
    assert reply["ok"], reply
    assert (reply["result"]["height"], reply["result"]["width"]) == (40, 60)


def test_exif_rotation_is_applied(worker, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path, exif=exif)
    reply = worker.ask(
        "segment", image=str(path), vocabulary=["cat"], output_prefix=str(tmp_path / "r")
    )
    assert reply["ok"], reply
    assert (reply["result"]["height"], reply["result"]["width"]) == (60, 40)


@pytest.mark.parametrize(
    "vocabulary", [[], ["cat", "cat"], ["cat", " "]], ids=["empty", "duplicate", "blank"]
)
def test_bad_vocabularies(worker, tmp_path, vocabulary):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
    reply = worker.ask(
        "segment", image=str(path), vocabulary=vocabulary, output_prefix=str(tmp_path / "v")
    )
    assert error_of(reply)["type"] == "bad_vocabulary"


def test_checkpoint_of_another_method_is_refused(tmp_path):
    other = tmp_path / "ovseg.pth"
    torch.save({"model": {"sem_seg_head.predictor.weight": torch.zeros(2, 2)}}, other)
    client = WorkerClient("ovss_san.worker")
    try:
        error = error_of(client.ask("load", config=str(CONFIG), weights=str(other), device="cpu"))
        assert error["type"] == "bad_checkpoint" and "not a SAN checkpoint" in error["message"]
        error = error_of(client.ask("load", config=str(tmp_path / "absent.yaml"), device="cpu"))
        assert error["type"] == "bad_config"
        error = error_of(
            client.ask("load", config=str(CONFIG), device="cpu", options={"colour": "blue"})
        )
        assert error["type"] == "bad_option"
    finally:
        client.close()


def test_offline_default_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    client = WorkerClient("ovss_san.worker")
    try:
        error = error_of(client.ask("load", device="cpu"))
        assert error["type"] == "bad_checkpoint"
        assert (
            "san_vit_b_16.pth" in error["message"] and str(tmp_path / "cache") in error["message"]
        )
    finally:
        client.close()
