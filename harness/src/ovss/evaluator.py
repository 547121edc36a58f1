"""A detectron2-style semantic-segmentation evaluator over stored per-image confusions.

``SemSegEvaluator`` has the usual ``reset`` / ``process`` / ``evaluate``; ``process`` keeps one
sparse confusion per image (and can store it on disk so that a resumed run re-reads it
instead of re-predicting), ``evaluate`` sums them and applies one mIoU definition.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovss.errors import OvssError
from ovss.metrics import ConfusionMatrix, SparseConfusion, compute_metrics, image_confusion
from ovss_common.outputs import LabelMapError, read_label_map, write_atomic


def save_confusion(path: str | Path, confusion: SparseConfusion) -> Path:
    """Store one image's sparse confusion as ``.npz`` (written atomically)."""
    return write_atomic(path, lambda file: np.savez_compressed(file, **confusion.to_npz_dict()))


def load_confusion(path: str | Path) -> SparseConfusion:
    try:
        with np.load(path) as data:
            return SparseConfusion.from_npz({key: data[key] for key in ("gt", "pred", "count")})
    except (OSError, KeyError, ValueError) as exc:
        raise OvssError(f"{path}: unreadable confusion file ({exc})") from None


def confusion_file(folder: Path, stem: str) -> Path:
    """Where a run folder stores one image's confusion: ``folder/confusion/<stem>.npz``."""
    return folder / "confusion" / f"{stem}.npz"


class SemSegEvaluator:
    """Sums per-image confusion matrices and computes metrics once at the end."""

    def __init__(
        self,
        num_classes: int,
        ignore_label: int | None,
        class_names: list[str] | None = None,
        definition: str = "d2-v0.6",
        background: int | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.class_names = class_names
        self.definition = definition
        self.background = background
        self.reset()

    def reset(self) -> None:
        self._matrix = ConfusionMatrix(self.num_classes)
        self._images: list[str] = []

    def process(self, name: str, gt: np.ndarray, pred: np.ndarray) -> SparseConfusion:
        """Add one image (``[H, W]`` ground truth and prediction); returns its confusion."""
        confusion = image_confusion(gt, pred, self.num_classes, self.ignore_label, name)
        self.add(name, confusion)
        return confusion

    def add(self, name: str, confusion: SparseConfusion) -> None:
        """Add an image's already computed confusion (e.g. read back from disk)."""
        self._matrix.add(confusion)
        self._images.append(name)

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix.counts

    def evaluate(self) -> dict[str, object]:
        metrics = compute_metrics(self.matrix, self.definition, self.class_names, self.background)
        return {
            **{key: metrics[key] for key in ("mIoU", "fwIoU", "mACC", "pACC", "definition")},
            "num_images": len(self._images),
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "background": self.background,
            "per_class": metrics["per_class"],
        }


GT_SUFFIXES = (".png", ".tif", ".tiff")


def evaluate_folders(
    pred_dir: Path,
    gt_dir: Path,
    num_classes: int,
    ignore_label: int | None,
    definition: str = "d2-v0.6",
    background: int | None = None,
    class_names: list[str] | None = None,
) -> dict[str, object]:
    """Score every ``pred_dir/<stem>.png`` against ``gt_dir/<stem>.{png,tif}``.

    Raises:
        OvssError: a folder is missing or empty, a ground-truth file is missing, or a pair
            is unreadable, differs in size or holds labels beyond ``num_classes``.
    """
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise OvssError(f"{folder}: no such folder")
    predictions = sorted(pred_dir.glob("*.png"))
    if not predictions:
        raise OvssError(f"{pred_dir}: no .png label maps")
    pairs = []
    for prediction in predictions:
        gt = next(
            (p for s in GT_SUFFIXES if (p := gt_dir / f"{prediction.stem}{s}").is_file()), None
        )
        if gt is None:
            raise OvssError(
                f"{gt_dir}: no ground truth for {prediction.name} (looked for .png, .tif)"
            )
        pairs.append((prediction, gt))
    evaluator = SemSegEvaluator(num_classes, ignore_label, class_names, definition, background)
    for prediction, gt in pairs:
        try:
            evaluator.process(prediction.stem, read_label_map(gt), read_label_map(prediction))
        except LabelMapError as exc:
            raise OvssError(str(exc)) from None
    return evaluator.evaluate()
