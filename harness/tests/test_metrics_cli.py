"""``ovss metrics`` on folders of label maps."""

import json

import numpy as np
import pytest
from PIL import Image

from ovss.cli import main
from ovss.datasets import get_dataset
from ovss.metrics import DEFINITIONS


def _png(path, array, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype)).save(path)


@pytest.mark.parametrize("definition", DEFINITIONS)
def test_mini_voc_ground_truth_against_itself_is_perfect(tmp_path, definition):
    dataset = get_dataset("mini-voc")
    gt_dir = dataset.root_path() / dataset.labels
    out = tmp_path / "m.json"
    argv = ["metrics", "--pred", str(gt_dir), "--gt", str(gt_dir), "--num-classes", "21"]
    assert (
        main([*argv, "--ignore-label", "255", "--definition", definition, "--out", str(out)]) == 0
    )
    metrics = json.loads(out.read_text())
    assert metrics["mIoU"] == 100.0 and metrics["pACC"] == 100.0 and metrics["num_images"] == 4


def test_metrics_with_class_names_and_sixteen_bit_predictions(tmp_path):
    _png(tmp_path / "gt" / "a.png", [[0, 1], [1, 255]])
    _png(tmp_path / "pred" / "a.png", [[0, 1], [65535, 1]], np.uint16)
    names = tmp_path / "names.txt"
    names.write_text("road\ncar\n")
    out = tmp_path / "m.json"
    argv = ["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main([*argv, "--num-classes", "2", "--class-names", str(names), "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["per_class"]["car"] == {"IoU": 50.0, "ACC": 50.0}
    assert metrics["mIoU"] == pytest.approx(75.0)


def test_car_definition_with_background(tmp_path):
    _png(tmp_path / "gt" / "a.png", [[0, 1], [1, 1]])
    _png(tmp_path / "pred" / "a.png", [[1, 1], [0, 1]])
    out = tmp_path / "m.json"
    argv = ["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    argv += ["--num-classes", "2", "--definition", "car", "--background", "0", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text())["mIoU"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing_gt", "no ground truth for b.png"),
        ("size", "size mismatch"),
        ("beyond", "ground-truth label 9 is beyond num-classes 3"),
        ("pred_beyond", "predicted label 7 is beyond num-classes 3"),
        ("corrupt", "pred/a.png: not an image file Pillow can read"),
        ("empty", "no .png label maps"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, capsys, setup, message):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    if setup != "empty":
        _png(gt / "a.png", [[0, 1], [2, 255]])
        _png(pred / "a.png", [[0, 1], [2, 2]])
    if setup == "missing_gt":
        _png(pred / "b.png", [[0]])
    elif setup == "size":
        _png(pred / "a.png", [[0, 1, 2]])
    elif setup == "beyond":
        _png(gt / "a.png", [[0, 9], [2, 255]])
    elif setup == "pred_beyond":
        _png(pred / "a.png", [[0, 7], [2, 2]])
    elif setup == "corrupt":
        (pred / "a.png").write_bytes((pred / "a.png").read_bytes()[:40])
    argv = ["metrics", "--pred", str(pred), "--gt", str(gt), "--num-classes", "3"]
    assert main([*argv, "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("ovss: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "m.json").exists()
