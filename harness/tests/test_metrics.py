import json
from pathlib import Path

import numpy as np
import pytest

from ovss.errors import OvssError
from ovss.evaluator import SemSegEvaluator
from ovss.metrics import NO_CLASS, ConfusionMatrix, compute_metrics, image_confusion

NC = NO_CLASS
# Hand-made case, 4 classes, ignore 255. Valid (gt, pred) pairs:
# (0,0) (0,0) (0,1) (1,1) (1,NC) (0,0) (1,1) (1,2); class 2 predicted but absent from GT,
# class 3 absent from both, two ignore pixels (one of them predicted 2).
GT = np.array([[0, 0, 0, 1, 1], [255, 255, 0, 1, 1]])
PRED = np.array([[0, 0, 1, 1, NC], [2, 0, 0, 1, 2]])


def _metrics(definition, background=None):
    evaluator = SemSegEvaluator(4, 255, ["a", "b", "c", "d"], definition, background)
    evaluator.process("case", GT, PRED)
    return evaluator.evaluate()


@pytest.mark.parametrize(
    ("definition", "miou", "fwiou", "macc", "pacc", "iou_c"),
    [
        # IoU a = 3/4, b = 2/5; d2-v0.6 divides by the 3 classes seen in GT or prediction
        ("d2-v0.6", 115 / 3, 57.5, 62.5, 62.5, None),
        ("d2-main", 57.5, 57.5, 62.5, 62.5, None),
        ("mmseg", 115 / 3, 57.5, 62.5, 62.5, 0.0),
        ("car", 57.5, 57.5, 62.5, 62.5, 0.0),
    ],
)
def test_hand_computed_definitions(definition, miou, fwiou, macc, pacc, iou_c):
    metrics = _metrics(definition)
    assert metrics["mIoU"] == pytest.approx(miou)
    assert metrics["fwIoU"] == pytest.approx(fwiou)
    assert metrics["mACC"] == pytest.approx(macc)
    assert metrics["pACC"] == pytest.approx(pacc)
    assert metrics["per_class"]["a"] == pytest.approx({"IoU": 75.0, "ACC": 75.0})
    assert metrics["per_class"]["b"] == pytest.approx({"IoU": 40.0, "ACC": 50.0})
    assert metrics["per_class"]["c"]["IoU"] == iou_c
    assert metrics["per_class"]["d"] == {"IoU": None, "ACC": None}
    assert metrics["definition"] == definition and metrics["num_images"] == 1


def test_car_background_drops_row_and_column():
    # Without class a's row and column: b has tp 2, 4 GT pixels (one "no class"), 2 predictions.
    metrics = _metrics("car", background=0)
    assert metrics["mIoU"] == pytest.approx(50.0)
    assert metrics["pACC"] == pytest.approx(50.0)
    assert metrics["per_class"]["a"] == {"IoU": None, "ACC": None}
    assert metrics["per_class"]["c"]["IoU"] == 0.0


def test_car_can_drop_unassigned_pixels():
    # Without the "no class" column, b's (1, NC) pixel vanishes: b has tp 2, 3 GT, 3 predicted.
    matrix = ConfusionMatrix(4)
    matrix.add(image_confusion(GT, PRED, 4, 255))
    counts = matrix.counts
    metrics = compute_metrics(counts, "car", ["a", "b", "c", "d"], drop_unassigned=True)
    assert metrics["per_class"]["b"] == pytest.approx({"IoU": 50.0, "ACC": 2 / 3 * 100})
    assert metrics["mIoU"] == pytest.approx(62.5)
    assert metrics["pACC"] == pytest.approx(500 / 7)
    with pytest.raises(OvssError, match="car definition only"):
        compute_metrics(counts, "d2-main", drop_unassigned=True)


def test_background_only_for_car():
    with pytest.raises(OvssError, match="car definition only"):
        _metrics("d2-v0.6", background=0)


def test_more_than_255_classes():
    gt = np.array([[256, 299], [299, 65535]])
    pred = np.array([[256, 0], [299, 5]])
    confusion = image_confusion(gt, pred, 300, 65535)
    matrix = np.zeros((300, 301), np.int64)
    np.add.at(matrix, (confusion.gt, confusion.pred), confusion.count)
    assert compute_metrics(matrix, "d2-v0.6")["mIoU"] == pytest.approx(50.0)
    assert compute_metrics(matrix, "d2-main")["mIoU"] == pytest.approx(75.0)


def test_no_class_is_a_miss_not_an_error():
    confusion = image_confusion(np.array([[0, 1]]), np.array([[NC, 1]]), 2, 255)
    matrix = np.zeros((2, 3), np.int64)
    np.add.at(matrix, (confusion.gt, confusion.pred), confusion.count)
    metrics = compute_metrics(matrix, "d2-v0.6")
    assert metrics["per_class"]["0"]["IoU"] == 0.0
    assert metrics["mIoU"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("gt", "pred", "message"),
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), "size mismatch"),
        (np.array([[7]]), np.array([[0]]), "ground-truth label 7 is beyond num-classes 4"),
        (np.array([[0]]), np.array([[4]]), "predicted label 4 is beyond num-classes 4"),
    ],
)
def test_bad_pairs(gt, pred, message):
    with pytest.raises(OvssError, match=message):
        image_confusion(gt, pred, 4, 255, "img")


def test_summing_images_equals_one_big_image():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 5, (7, 9)) for _ in range(3)]
    preds = [rng.integers(0, 5, (7, 9)) for _ in range(3)]
    split = SemSegEvaluator(5, 255)
    for i, (g, p) in enumerate(zip(gts, preds, strict=True)):
        split.process(str(i), g, p)
    whole = SemSegEvaluator(5, 255)
    whole.process("all", np.concatenate(gts), np.concatenate(preds))
    assert np.array_equal(split.matrix, whole.matrix)
    assert split.evaluate()["mIoU"] == pytest.approx(whole.evaluate()["mIoU"])


def test_car_definition_matches_the_original_semantic_iou():
    """The golden CaR VOC case stores upstream semantic_iou of its label map (fractions)."""
    case = Path(__file__).resolve().parents[2] / "packages/car/tests/golden/cases/voc20_voc.npz"
    with np.load(case) as data:
        label_map, gt = data["label_map"], data["gt_label"]
        expected = json.loads(str(data["metric_semantic_iou"]))
    evaluator = SemSegEvaluator(21, 255, None, "car")
    evaluator.process("voc", gt, label_map)
    metrics = evaluator.evaluate()
    assert metrics["mIoU"] == pytest.approx(100 * expected["mIoU"], abs=1e-12)
    assert metrics["pACC"] == pytest.approx(100 * expected["Pixel Accuracy"], abs=1e-12)
    assert metrics["mACC"] == pytest.approx(100 * expected["Mean Accuracy"], abs=1e-12)
    assert metrics["fwIoU"] == pytest.approx(100 * expected["Frequency Weighted IoU"], abs=1e-12)
    for class_id, iou in expected["Class IoU"].items():
        ours = metrics["per_class"][class_id]["IoU"]
        assert (ours is None) if iou is None else ours == pytest.approx(100 * iou, abs=1e-12)
