"""The real method packages through the harness, on their golden tiny fixtures.

These run each method's worker in its own environment (``nox -s tests`` builds every
environment before any test runs).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ovss.cli import main
from ovss.environments import environment_status, get_method
from ovss.errors import OvssError
from ovss.fixtures import tiny


def method_ready(method: str) -> bool:
    """Whether the method's environment is built. ``nox -s tests`` builds every environment
    first and sets ``OVSS_REQUIRE_METHODS=1``: there these tests never skip."""
    if os.environ.get("OVSS_REQUIRE_METHODS") == "1":
        return True
    try:
        return environment_status(get_method(method)) == "ready"
    except OvssError:
        return False


san = pytest.mark.skipif(not method_ready("san"), reason="the SAN environment is not built")
ovseg = pytest.mark.skipif(not method_ready("ovseg"), reason="the OVSeg environment is not built")
car = pytest.mark.skipif(not method_ready("car"), reason="the CaR environment is not built")


@san
def test_san_segment_reproduces_the_golden_scores(tmp_path, capsys):
    fixture = tiny("san")
    with np.load(fixture.config.parent / "cases" / "chelsea_custom3.npz") as case:
        image, golden, labels = case["image"], case["scores"], case["label"]
    path = tmp_path / "chelsea.png"
    Image.fromarray(image).save(path)
    code = main(
        [
            "segment",
            "--method",
            "san",
            "--config",
            str(fixture.config),
            "--weights",
            str(fixture.weights),
            "--device",
            "cpu",
            "--image",
            str(path),
            "--classes",
            "cat",
            "carpet",
            "wall",
            "--out",
            str(tmp_path / "out"),
            "--save-scores",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with np.load(tmp_path / "out" / "chelsea.npz") as saved:
        scores = saved["scores"]
    assert np.all(np.abs(scores - golden) <= 5e-4 + 1e-4 * np.abs(golden))
    sidecar = json.loads((tmp_path / "out" / "chelsea.json").read_text())
    assert sidecar["provenance"]["weights_sha256"]
    assert (tmp_path / "out" / "overlays" / "chelsea.png").is_file()
    written = np.asarray(Image.open(tmp_path / "out" / "chelsea.png"))
    assert (written == labels).mean() >= 0.999


@san
def test_san_eval_tiny_on_mini_voc(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--method",
            "san",
            "--dataset",
            "mini-voc",
            "--tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "untrained tiny weights" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["label_space"] == "voc-20"
    assert metrics["provenance"]["untrained_weights"] is True
    assert 0.0 <= metrics["mIoU"] <= 100.0


@ovseg
def test_ovseg_segment_reproduces_the_golden_scores(tmp_path, capsys):
    fixture = tiny("ovseg")
    with np.load(fixture.config.parent / "cases" / "chelsea_custom3.npz") as case:
        image, golden = case["image"], case["scores"]
        vocabulary = json.loads(str(case["vocabulary_json"]))
    path = tmp_path / "chelsea.png"
    Image.fromarray(image).save(path)
    code = main(
        [
            "segment",
            "--method",
            "ovseg",
            "--tiny",
            "--device",
            "cpu",
            "--image",
            str(path),
            "--classes",
            *vocabulary,
            "--out",
            str(tmp_path / "out"),
            "--save-scores",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with np.load(tmp_path / "out" / "chelsea.npz") as saved:
        assert np.abs(saved["scores"] - golden).max() <= 1e-3
    sidecar = json.loads((tmp_path / "out" / "chelsea.json").read_text())
    assert sidecar["effective_vocabulary"] == vocabulary


@ovseg
def test_ovseg_eval_tiny_uses_the_voc_ensemble_weight(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--method",
            "ovseg",
            "--dataset",
            "mini-voc",
            "--tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run = json.loads((out / "run.json").read_text())
    assert run["cache_key"]["options"] == {"ensemble_weight": 0.45}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["label_space"] == "voc-20"


def test_car_definition_matches_the_original_semantic_iou():
    """CaR's own metric on its golden VOC case: 21 classes, background scored, nothing ignored."""
    from ovss.metrics import ConfusionMatrix, compute_metrics, image_confusion

    fixture = tiny("car")
    with np.load(fixture.weights / "cases" / "voc20_voc.npz") as case:
        labels, truth = case["label_map"], case["gt_label"]
        golden = json.loads(str(case["metric_semantic_iou"]))
    matrix = ConfusionMatrix(21)
    matrix.add(image_confusion(truth, labels, 21, None))
    metrics = compute_metrics(matrix.counts, "car")
    assert metrics["mIoU"] == pytest.approx(100 * golden["mIoU"], abs=1e-10)
    assert metrics["pACC"] == pytest.approx(100 * golden["Pixel Accuracy"], abs=1e-10)


@car
def test_car_segment_reproduces_the_golden_label_map(tmp_path, capsys):
    fixture = tiny("car")
    config = fixture.weights / "configs" / "custom_chelsea.yaml"
    with np.load(fixture.weights / "cases" / "custom_chelsea.npz") as case:
        image, golden = case["image"], case["label_map"].astype(np.int64) - 1
        vocabulary = json.loads(str(case["vocabulary"]))
    golden[golden < 0] = 65535
    path = tmp_path / "chelsea.png"
    Image.fromarray(image).save(path)
    code = main(
        [
            "segment",
            "--method",
            "car",
            "--config",
            str(config),
            "--weights",
            str(fixture.weights),
            "--device",
            "cpu",
            "--image",
            str(path),
            "--classes",
            *vocabulary,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    labels = np.asarray(Image.open(tmp_path / "out" / "chelsea.png")).astype(np.int64)
    assert (labels == golden).mean() >= 0.995


@car
def test_car_eval_tiny_on_mini_voc(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--method",
            "car",
            "--dataset",
            "mini-voc",
            "--tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--definition",
            "car",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["label_space"] == "voc-21"


@car
def test_methods_lists_each_weights_file_and_how_it_is_checked(capsys):
    assert main(["methods", "--weights"]) == 0
    out = capsys.readouterr().out
    clip = next(line for line in out.splitlines() if line.startswith("  ViT-B/16:"))
    assert "sha256 pinned (published)" in clip and "voc" in clip
    assert "/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/" in clip
    sam = next(line for line in out.splitlines() if line.startswith("  sam_vit_b:"))
    assert "optional; md5 prefix pinned" in sam
    assert any(
        line.startswith("  san_vit_b_16:") and "trust on first use" in line
        for line in out.splitlines()
    )
