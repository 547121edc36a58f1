"""ovss_common.bench without torch: the image and text-encoding loops every bench shares."""

from __future__ import annotations

import json
import types

import numpy as np
from PIL import Image

from ovss_common.bench import bench_vocabularies, measure_images, measure_text_encoding
from ovss_common.inspection import doubled_vocabulary

CPU = types.SimpleNamespace(type="cpu")


def test_measure_images_writes_after_every_image(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, size in (("a.png", (6, 4)), ("b.png", (3, 5))):
        Image.fromarray(np.full((*size, 3), 7, np.uint8)).save(folder / name)
    paths = sorted(folder.iterdir())
    seen, written = [], []
    out = tmp_path / "bench.json"

    def run(rgb: np.ndarray) -> int:
        seen.append(rgb.shape)
        if out.is_file():
            written.append(len(json.loads(out.read_text())["per_image"]))
        return int(rgb.sum())

    result: dict = {}
    measure_images(
        result,
        paths,
        run,
        CPU,
        out,
        exif_transpose=False,
        repeats=2,
        warmup=True,
        describe=lambda total: {"total": total},
    )
    assert seen == [(6, 4, 3)] * 3 + [(3, 5, 3)] * 2
    assert written == [1, 1]
    saved = json.loads(out.read_text())
    assert saved["per_image"]["a.png"]["hw"] == [6, 4]
    assert saved["per_image"]["b.png"]["total"] == 3 * 5 * 3 * 7
    assert len(saved["per_image"]["b.png"]["runs"]) == 2
    assert len(saved["image"]["runs"]) == 4 and saved["peak_rss_bytes"] > 0


def test_measure_text_encoding_clears_the_cache_before_each_run(tmp_path):
    calls = []
    result: dict = {}
    vocabularies = {"two": ["cat", "dog"], "one": ["sky"]}
    measure_text_encoding(
        result,
        vocabularies,
        lambda names: calls.append(("encode", len(names))),
        lambda: calls.append(("clear", 0)),
        2,
        CPU,
        tmp_path / "bench.json",
        templates=14,
    )
    assert calls == [("clear", 0), ("encode", 2)] * 2 + [("clear", 0), ("encode", 1)] * 2
    saved = json.loads((tmp_path / "bench.json").read_text())["text_encoding"]
    assert saved["two"]["classes"] == 2 and saved["two"]["prompts"] == 28
    assert len(saved["one"]["runs"]) == 2


def test_bench_vocabularies_and_the_doubled_vocabulary():
    names = bench_vocabularies("san")
    assert len(names["voc_20"]) == 20 and len(names["ade_150"]) == 150
    assert all(name == name.strip() for name in names["ade_150"])
    doubled = doubled_vocabulary(["cat", "wall"])
    assert doubled[:2] == ["cat", "wall"] and len(set(doubled)) == 4
