"""``ovss visualize``: draw the predictions of any run beside the ground truth.

Reads a detectron2-style ``sem_seg_predictions.json`` (ours, written by ``ovss eval`` and
``ovss sweep``, or detectron2's own): one COCO RLE per predicted class per image, ``category_id``
a dataset id. Each image of the dataset that has entries gets ``OUT/<stem>.png``: the input, the
ground truth and the prediction, coloured with the label space's class names.

The label space is read from ``metrics.json`` / ``run.json`` beside the JSON when they exist,
else ``--label-space``, else the dataset's default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ovss.datasets import LabelSpace, build_mini_voc, get_dataset, get_label_space
from ovss.errors import OvssError
from ovss.metrics import NO_CLASS
from ovss.render import Panel, overlay, side_by_side
from ovss.rle import decode_entries
from ovss_common.outputs import read_label_map


def _label_space_beside(predictions: Path) -> str | None:
    for name in ("metrics.json", "run.json"):
        path = predictions.parent / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            found = data.get("label_space") or data.get("cache_key", {}).get("label_space")
            if found:
                return found
    return None


def _image(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The image as ``[H, W, 3]`` uint8 RGB, EXIF-transposed when that matches ``shape``."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
        if rgb.shape[:2] != shape:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if rgb.shape[:2] != shape:
        raise OvssError(f"{path}: image {rgb.shape[:2]} and prediction {shape} differ in size")
    return rgb


def _checked(labels: np.ndarray, space: LabelSpace, what: str) -> np.ndarray:
    bad = (labels != NO_CLASS) & (labels >= space.num_classes)
    if bad.any():
        raise OvssError(
            f"{what}: id {int(labels[bad].max())} beyond label space {space.name} "
            f"({space.num_classes} classes); pass --label-space"
        )
    return labels


def visualize(
    predictions: Path,
    dataset: str,
    out: Path,
    label_space: str | None = None,
    limit: int | None = None,
) -> list[Path]:
    """Write one side-by-side PNG per predicted image; returns their paths."""
    if not predictions.is_file():
        raise OvssError(f"{predictions}: no such file")
    try:
        entries: list[dict[str, Any]] = json.loads(predictions.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise OvssError(f"{predictions}: not a JSON file ({exc})") from None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and {"file_name", "category_id", "segmentation"} <= set(e)
        for e in entries
    ):
        raise OvssError(f"{predictions}: not a list of sem_seg RLE entries")
    data = get_dataset(dataset)
    if data.name == "mini-voc":
        build_mini_voc(data.root_path())
    space = get_label_space(label_space or _label_space_beside(predictions) or data.label_space)
    by_stem: dict[str, str] = {}
    for entry in entries:
        by_stem.setdefault(Path(entry["file_name"]).stem, entry["file_name"])
    samples = [s for s in data.samples() if s.stem in by_stem]
    if not samples:
        raise OvssError(f"{predictions}: no entry names an image of {dataset}")
    written = []
    for sample in samples[:limit] if limit is not None else samples:
        prediction = _checked(decode_entries(entries, by_stem[sample.stem]), space, sample.stem)
        gt = space.convert_gt(read_label_map(sample.label)).astype(np.int64)
        if gt.shape != prediction.shape:
            raise OvssError(f"{sample.stem}: ground truth and prediction differ in size")
        if space.ignore_label is not None:
            gt[gt == space.ignore_label] = NO_CLASS
        gt = _checked(gt, space, f"{sample.label}")
        rgb = _image(sample.image, prediction.shape)
        names = list(space.class_names)
        picture = side_by_side(
            rgb,
            [
                Panel(f"ground truth ({space.name})", overlay(rgb, gt, names)),
                Panel("prediction", overlay(rgb, prediction, names)),
            ],
        )
        target = out / f"{sample.stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target)
        written.append(target)
    return written


HELP = "draw a run's sem_seg_predictions.json beside the ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``ovss visualize``."""
    parser.add_argument("--predictions", required=True, type=Path)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--label-space", help="default: from metrics.json beside the file")
    parser.add_argument("--limit", type=int, help="first N predicted images")
    parser.add_argument("--out", required=True, type=Path)


def command(args: argparse.Namespace) -> int:
    written = visualize(args.predictions, args.dataset, args.out, args.label_space, args.limit)
    print(f"{len(written)} images -> {args.out}")
    return 0
