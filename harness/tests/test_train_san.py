"""``ovss train --method san`` end to end: the tiny golden model trained on mini-voc and on a
registered dataset, its checkpoint evaluated and used by ``segment``, from the harness (the SAN
environment runs the trainer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ovss.cli import main
from ovss.datasets import register_dataset
from ovss.environments import ensure_environment, get_method


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tiny_training_on_mini_voc_is_evaluated_and_its_checkpoint_segments(tmp_path, capfd):
    ensure_environment(get_method("san"))
    out = tmp_path / "run"
    args = ["train", "--method", "san", "--tiny", "--dataset", "mini-voc", "--max-iter", "3"]
    assert main([*args, "--log-period", "1", "--device", "cpu", "--out", str(out)]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err
    losses = [line for line in _lines(out) if "total_loss" in line]
    assert [line["iteration"] for line in losses] == [1, 2, 3]
    assert all(np.isfinite(line["total_loss"]) and line["lr"] > 0 for line in losses)
    scored = [line for line in _lines(out) if "eval/mini-voc/mIoU" in line]
    assert scored and scored[-1]["iteration"] == 3
    metrics = json.loads((out / "eval" / "0000003" / "mini-voc" / "metrics.json").read_text())
    assert metrics["mIoU"] == scored[-1]["eval/mini-voc/mIoU"]
    assert metrics["label_space"] == "voc-20"
    segmented = tmp_path / "segmented"
    image = Path(json.loads((out / "train_request.json").read_text())["data"]["samples"][0][0])
    weights = ["--config", str(out / "config.yaml"), "--weights", str(out / "model_final.pth")]
    segment = ["segment", "--method", "san", *weights, "--image", str(image)]
    assert main([*segment, "--classes", "person", "dog", "--out", str(segmented)]) == 0
    assert (segmented / f"{image.stem}.png").is_file()


def test_fine_tuning_on_a_registered_dataset(tmp_path, capfd):
    ensure_environment(get_method("san"))
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    for stem in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(
            images / f"{stem}.png"
        )
        label = np.zeros((96, 128), np.uint8)
        label[20:70, 30:100] = 1
        label[:, 120:] = 255
        Image.fromarray(label).save(labels / f"{stem}.png")
    register_dataset("fields", images, labels, ["grass", "tractor"], 255)
    out = tmp_path / "tuned"
    args = ["train", "--method", "san", "--tiny", "--dataset", "fields", "--max-iter", "2"]
    assert main([*args, "--no-eval", "--device", "cpu", "--out", str(out)]) == 0
    request = json.loads((out / "train_request.json").read_text())
    assert request["data"]["classes"] == ["grass", "tractor"]
    assert (out / "model_final.pth").is_file()
    assert [line["iteration"] for line in _lines(out)] == [2]
