"""detectron2-style ``sem_seg_predictions.json``: one COCO RLE per predicted class per image.

Each entry is ``{"file_name", "category_id", "segmentation": {"size": [H, W], "counts"}}``,
as detectron2's semantic segmentation evaluator writes it, so that tools reading that file
(COCO API, detectron2 visualisers) read ours. ``category_id`` is the dataset id; "no class"
pixels (65535) get no entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

from ovss.metrics import NO_CLASS
from ovss_common.outputs import read_label_map, write_atomic


def encode_prediction(file_name: str, prediction: np.ndarray) -> list[dict[str, Any]]:
    """The RLE entries of one ``[H, W]`` prediction in dataset ids."""
    entries = []
    for label in np.unique(prediction):
        if label == NO_CLASS:
            continue
        mask = np.asfortranarray((prediction == label)[:, :, None].astype(np.uint8))
        rle = mask_util.encode(mask)[0]
        entries.append(
            {
                "file_name": file_name,
                "category_id": int(label),
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()},
            }
        )
    return entries


def decode_entries(entries: list[dict[str, Any]], file_name: str) -> np.ndarray:
    """``[H, W]`` dataset ids of ``file_name`` rebuilt from its entries (65535 elsewhere)."""
    mine = [entry for entry in entries if entry["file_name"] == file_name]
    if not mine:
        raise KeyError(file_name)
    height, width = mine[0]["segmentation"]["size"]
    labels = np.full((height, width), NO_CLASS, np.int64)
    for entry in mine:
        segmentation = {**entry["segmentation"], "counts": entry["segmentation"]["counts"].encode()}
        labels[mask_util.decode(segmentation).astype(bool)] = entry["category_id"]
    return labels


def export_predictions(predictions: dict[str, Path], out: Path) -> Path:
    """Write ``out`` from ``{image file name: prediction PNG}`` (sorted by name)."""
    entries: list[dict[str, Any]] = []
    for file_name in sorted(predictions):
        entries.extend(encode_prediction(file_name, read_label_map(predictions[file_name])))
    return write_atomic(out, lambda file: file.write(json.dumps(entries).encode("utf-8")))
