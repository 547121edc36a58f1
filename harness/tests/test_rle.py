"""detectron2-style RLE export: entries per class, exact round trip, "no class" left out."""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as mask_util

from ovss.rle import decode_entries, encode_prediction, export_predictions
from ovss_common.outputs import write_label_map

NO_CLASS = 65535


def _prediction() -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 3, 7, NO_CLASS], size=(37, 53)).astype(np.int64)
    labels[:5, :5] = 12
    return labels


def test_one_entry_per_predicted_class_with_its_area():
    prediction = _prediction()
    entries = encode_prediction("a.jpg", prediction)
    assert [e["category_id"] for e in entries] == [0, 3, 7, 12]
    for entry in entries:
        assert entry["file_name"] == "a.jpg"
        assert entry["segmentation"]["size"] == [37, 53]
        assert isinstance(entry["segmentation"]["counts"], str)
        rle = {**entry["segmentation"], "counts": entry["segmentation"]["counts"].encode()}
        decoded = mask_util.decode(rle).astype(bool)
        np.testing.assert_array_equal(decoded, prediction == entry["category_id"])


def test_export_round_trips_every_image(tmp_path):
    first, second = _prediction(), np.full((9, 4), NO_CLASS, np.int64)
    second[0, 0] = 2
    paths = {}
    for name, labels in (("x/1.jpg", first), ("x/2.jpg", second)):
        paths[name] = write_label_map(tmp_path / f"{name[-5]}.png", labels)
    out = export_predictions(paths, tmp_path / "sem_seg_predictions.json")
    entries = json.loads(out.read_text())
    np.testing.assert_array_equal(decode_entries(entries, "x/1.jpg"), first)
    np.testing.assert_array_equal(decode_entries(entries, "x/2.jpg"), second)
