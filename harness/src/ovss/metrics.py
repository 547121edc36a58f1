"""Confusion matrices and the four mIoU definitions (formulas in ``docs/metrics.md``).

A confusion matrix here is ``M[gt, pred]`` of shape ``[N, N + 1]`` int64: rows are the N
ground-truth classes (ignore pixels never enter it), columns the N predicted classes plus
one "no class" column for the prediction value 65535. A "no class" pixel over a valid
ground-truth pixel is a miss for that class: it adds to the class's ground-truth count and
to no class's prediction count.

Per-image matrices are stored sparsely as ``(gt, pred, count)`` triples and summed; metrics
are computed once from the sum, never averaged over images or shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ovss.errors import OvssError

NO_CLASS = 65535
DEFINITIONS = ("d2-v0.6", "d2-main", "mmseg", "car")
DEFAULT_DEFINITION = "d2-v0.6"

# Above this many cells a dense bincount per image costs more than sorting the pixels.
_DENSE_BINCOUNT_LIMIT = 1 << 22


@dataclass(frozen=True)
class SparseConfusion:
    """Non-zero cells of one image's confusion matrix; ``pred == num_classes`` is "no class"."""

    gt: np.ndarray
    pred: np.ndarray
    count: np.ndarray

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        return {"gt": self.gt, "pred": self.pred, "count": self.count}

    @classmethod
    def from_npz(cls, data: dict[str, np.ndarray]) -> SparseConfusion:
        return cls(gt=data["gt"], pred=data["pred"], count=data["count"])


def image_confusion(
    gt: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    ignore_label: int | None,
    name: str = "image",
) -> SparseConfusion:
    """Confusion of one prediction against its ground truth.

    Args:
        gt: ``[H, W]`` ground-truth ids in ``[0, num_classes)`` or ``ignore_label``.
        pred: ``[H, W]`` predicted ids in ``[0, num_classes)`` or 65535 ("no class").
        num_classes: N.
        ignore_label: ground-truth value that is skipped, or None.
        name: what to call the image in error messages.

    Raises:
        OvssError: shapes differ, or a value lies outside the label space.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise OvssError(
            f"{name}: size mismatch, ground truth is {_size(gt)} but the prediction is {_size(pred)}"
        )
    valid = gt != ignore_label if ignore_label is not None else np.ones(gt.shape, bool)
    gt_valid = gt[valid].astype(np.int64)
    pred_valid = pred[valid].astype(np.int64)
    bad_gt = (gt_valid < 0) | (gt_valid >= num_classes)
    if bad_gt.any():
        raise OvssError(
            f"{name}: ground-truth label {int(gt_valid[bad_gt][0])} is beyond num-classes "
            f"{num_classes} (ignore label {ignore_label})"
        )
    no_class = pred_valid == NO_CLASS
    bad_pred = ((pred_valid < 0) | (pred_valid >= num_classes)) & ~no_class
    if bad_pred.any():
        raise OvssError(
            f"{name}: predicted label {int(pred_valid[bad_pred][0])} is beyond num-classes "
            f"{num_classes} (65535 means no class)"
        )
    pred_valid[no_class] = num_classes
    width = num_classes + 1
    flat = gt_valid * width + pred_valid
    if num_classes * width <= _DENSE_BINCOUNT_LIMIT:
        counts = np.bincount(flat, minlength=num_classes * width)
        cells = np.flatnonzero(counts)
        counts = counts[cells]
    else:
        cells, counts = np.unique(flat, return_counts=True)
    return SparseConfusion(
        gt=(cells // width).astype(np.int32),
        pred=(cells % width).astype(np.int32),
        count=counts.astype(np.int64),
    )


def _size(array: np.ndarray) -> str:
    return "x".join(str(d) for d in array.shape[:2][::-1]) if array.ndim >= 2 else str(array.shape)


class ConfusionMatrix:
    """A running ``[N, N + 1]`` int64 sum of sparse per-image confusions."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros((num_classes, num_classes + 1), np.int64)

    def add(self, confusion: SparseConfusion) -> None:
        np.add.at(self.counts, (confusion.gt, confusion.pred), confusion.count)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise numerator / denominator, NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan)
    nonzero = denominator > 0
    out[nonzero] = numerator[nonzero] / denominator[nonzero]
    return out


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def compute_metrics(
    matrix: np.ndarray,
    definition: str = DEFAULT_DEFINITION,
    class_names: list[str] | None = None,
    background: int | None = None,
    drop_unassigned: bool = False,
) -> dict[str, object]:
    """Metrics of a summed ``[N, N + 1]`` confusion matrix, in percent.

    Args:
        matrix: ``M[gt, pred]`` counts; the last column is "no class".
        definition: one of ``DEFINITIONS``.
        class_names: names for ``per_class`` (default: the class ids as strings).
        background: for ``car`` only: a class id whose row and column are dropped, as
            CaR's ``ignore_background`` drops class 0.
        drop_unassigned: for ``car`` only: drop the "no class" column too, so that a pixel
            the method leaves unassigned is not a miss. This is CaR's ``ignore_background``
            on a dataset whose background class is ignored in the ground truth (VOC-20,
            PC-59, ADE): CaR predicts that background for its unassigned pixels.

    Returns:
        ``mIoU``, ``fwIoU``, ``mACC``, ``pACC`` (percent, None when undefined),
        ``per_class`` (name → ``IoU``, ``ACC`` in percent or None), ``definition``.
    """
    if definition not in DEFINITIONS:
        raise OvssError(
            f"unknown mIoU definition {definition!r}; choose one of {', '.join(DEFINITIONS)}"
        )
    num_classes = matrix.shape[0]
    if matrix.shape != (num_classes, num_classes + 1):
        raise ValueError(f"confusion matrix must be [N, N+1], got {matrix.shape}")
    if background is not None and definition != "car":
        raise OvssError("--background applies to the car definition only")
    if drop_unassigned and definition != "car":
        raise OvssError("dropping unassigned pixels applies to the car definition only")
    if background is not None and not 0 <= background < num_classes:
        raise OvssError(f"background id {background} is outside 0..{num_classes - 1}")
    names = class_names or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise OvssError(f"{len(names)} class names for {num_classes} classes")

    kept = np.array([c for c in range(num_classes) if c != background], dtype=np.int64)
    columns = kept if drop_unassigned else np.append(kept, num_classes)
    counts = matrix[np.ix_(kept, columns)].astype(np.float64)
    tp = counts[np.arange(kept.size), np.arange(kept.size)]
    pos_gt = counts.sum(axis=1)
    pos_pred = counts[:, : kept.size].sum(axis=0)
    union = pos_gt + pos_pred - tp
    gt_present = pos_gt > 0

    acc = _ratio(tp, pos_gt)
    if definition in ("d2-v0.6", "d2-main"):
        iou = np.where(gt_present, _ratio(tp, union), np.nan)
    else:
        iou = _ratio(tp, union)

    if definition == "d2-v0.6":
        seen = int(np.count_nonzero(union > 0))
        miou = float(np.sum(iou[gt_present])) / seen if seen else math.nan
    elif definition == "mmseg":
        miou = _mean(iou)
    else:
        miou = _mean(iou[gt_present])
    total = float(pos_gt.sum())
    weights = pos_gt / total if total else np.zeros_like(pos_gt)
    fwiou = float(np.sum(iou[gt_present] * weights[gt_present])) if total else math.nan
    pacc = float(tp.sum()) / total if total else math.nan

    per_class: dict[str, dict[str, float | None]] = {
        name: {"IoU": None, "ACC": None} for name in names
    }
    for position, class_id in enumerate(kept):
        per_class[names[class_id]] = {
            "IoU": _percent(iou[position]),
            "ACC": _percent(acc[position]),
        }
    return {
        "definition": definition,
        "mIoU": _percent(miou),
        "fwIoU": _percent(fwiou),
        "mACC": _percent(_mean(acc)),
        "pACC": _percent(pacc),
        "per_class": per_class,
        "background": background,
    }


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else 100.0 * float(value)
