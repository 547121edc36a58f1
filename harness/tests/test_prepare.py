"""`ovss datasets prepare` / `check` on synthetic miniatures of each official download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from ovss.cli import main
from ovss.datasets import get_dataset
from ovss.datasets.prepare import check_dataset, prepare_dataset
from ovss.errors import OvssError
from ovss_common.class_lists import class_file
from ovss_common.outputs import read_label_map


@pytest.fixture
def root(monkeypatch, tmp_path) -> Path:
    """An empty datasets root per test (the session root holds mini-voc)."""
    path = tmp_path / "datasets"
    monkeypatch.setenv("DETECTRON2_DATASETS", str(path))
    return path


def _jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _png(path: Path, labels: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8))
    if palette:  # VOC's SegmentationClass PNGs are palette images; the indices are the ids
        image = Image.frombytes("P", image.size, image.tobytes())
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    image.save(path)


def _label(dataset: str, stem: str) -> np.ndarray:
    entry = get_dataset(dataset)
    return read_label_map(entry.root_path() / entry.labels / f"{stem}{entry.label_suffix}")


# --- ADE20K-150 ---------------------------------------------------------------------------

ADE_RAW = {
    "ADE_val_00000001": np.array([[0, 1, 2, 150], [150, 149, 0, 1]]),
    "ADE_val_00000002": np.array([[5, 5, 0, 0], [0, 0, 7, 100]]),
}


def _ade_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    base = raw / "ADEChallengeData2016"
    for i, (stem, labels) in enumerate(ADE_RAW.items()):
        _jpg(base / "images/validation" / f"{stem}.jpg", i)
        _png(base / "annotations/validation" / f"{stem}.png", labels)
    return raw


def test_ade150_is_raw_minus_one_with_zero_ignored(root, tmp_path):
    result = prepare_dataset("ade20k-150", _ade_raw(tmp_path), progress=False)
    assert (result.written, result.skipped) == (4, 0)
    for stem, raw in ADE_RAW.items():
        expected = np.where(raw == 0, 255, raw - 1)
        np.testing.assert_array_equal(_label("ade20k-150", stem), expected)
    assert [s.stem for s in get_dataset("ade20k-150").samples()] == list(ADE_RAW)
    assert check_dataset("ade20k-150", expected=2) == []


def test_prepare_is_resumable_and_keeps_finished_files(root, tmp_path):
    raw = _ade_raw(tmp_path)
    prepare_dataset("ade20k-150", raw, progress=False)
    label = (
        get_dataset("ade20k-150").root_path()
        / "annotations_detectron2/validation/ADE_val_00000001.png"
    )
    stamp = label.stat().st_mtime_ns
    again = prepare_dataset("ade20k-150", raw, progress=False)
    assert (again.written, again.skipped) == (0, 4)
    assert label.stat().st_mtime_ns == stamp
    # a missing output (an interrupted run) is produced; the others are skipped
    label.unlink()
    third = prepare_dataset("ade20k-150", raw, progress=False)
    assert (third.written, third.skipped) == (1, 3)
    assert not list(label.parent.glob(".*.tmp"))


# --- Pascal Context -----------------------------------------------------------------------

NAMES_459 = class_file("pc-459")["names"]
NAMES_59 = class_file("pc-59")["names"]


def _id459(name: str) -> int:
    return NAMES_459.index(name) + 1  # labels.txt ids are 1-based, 0 = background


CONTEXT_RAW = {
    "2008_000002": np.array(
        [
            [0, _id459("aeroplane"), _id459("accordion"), _id459("wood")],
            [459, 1, 0, _id459("table")],
        ]
    ),
    "2008_000003": np.array([[_id459("sky"), _id459("sky"), 0, 0], [2, 3, 4, 5]]),
}


def _context_raw(tmp_path: Path, suffix: str = ".mat") -> Path:
    raw = tmp_path / "raw"
    images = raw / "VOCdevkit/VOC2010/JPEGImages"
    for i, (stem, labels) in enumerate(CONTEXT_RAW.items()):
        _jpg(images / f"{stem}.jpg", i)
        target = raw / "trainval" / f"{stem}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".mat":
            savemat(target, {"LabelMap": labels.astype(np.uint16)})
        else:
            Image.fromarray(labels.astype(np.uint16)).save(target)
    _jpg(images / "2008_000004.jpg", 9)  # in the split, no annotation: not converted
    _jpg(images / "2008_000005.jpg", 8)  # not in the split
    (raw / "pascalcontext_val.txt").write_text("2008_000002\n2008_000003\n2008_000004\n")
    return raw


@pytest.mark.parametrize("suffix", [".mat", ".png"])
def test_pc459_is_labelmap_minus_one_as_uint16_tiff(root, tmp_path, suffix):
    prepare_dataset("pc-459", _context_raw(tmp_path, suffix), progress=False)
    dataset = get_dataset("pc-459")
    for stem, raw in CONTEXT_RAW.items():
        path = dataset.root_path() / dataset.labels / f"{stem}.tif"
        with Image.open(path) as image:
            assert image.mode == "I;16"
        np.testing.assert_array_equal(_label("pc-459", stem), np.where(raw == 0, 65535, raw - 1))
    assert [s.stem for s in dataset.samples()] == list(CONTEXT_RAW)
    assert check_dataset("pc-459", expected=2) == []


def test_pc59_keeps_the_59_classes_in_canonical_order(root, tmp_path):
    prepare_dataset("pc-59", _context_raw(tmp_path), progress=False)
    first = _label("pc-59", "2008_000002")
    assert first.dtype == np.int64
    expected = np.array(
        [
            [255, NAMES_59.index("aeroplane"), 255, NAMES_59.index("wood")],
            [255, 255, 255, NAMES_59.index("table")],
        ]
    )
    np.testing.assert_array_equal(first, expected)
    assert NAMES_59.index("aeroplane") == 0
    second = _label("pc-59", "2008_000003")
    assert (second[0, :2] == NAMES_59.index("sky")).all() and (second[0, 2:] == 255).all()
    assert check_dataset("pc-59", expected=2) == []
    # the images are shared with pc-459: preparing it afterwards skips them
    again = prepare_dataset("pc-459", _context_raw(tmp_path), progress=False)
    assert (again.written, again.skipped) == (2, 2)


# --- VOC ----------------------------------------------------------------------------------

VOC_RAW = {
    "2007_000033": np.array([[0, 1, 255, 20], [15, 15, 0, 0]]),
    "2007_000042": np.array([[0, 0, 7, 7], [255, 255, 19, 0]]),
}


def _voc_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    voc = raw / "VOCdevkit/VOC2012"
    for i, (stem, labels) in enumerate(VOC_RAW.items()):
        _jpg(voc / "JPEGImages" / f"{stem}.jpg", i)
        _png(voc / "SegmentationClass" / f"{stem}.png", labels, palette=True)
    _jpg(voc / "JPEGImages/2007_000099.jpg", 7)  # a training image: not linked
    (voc / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(VOC_RAW) + "\n")
    return raw


def test_voc_links_the_raw_pngs_for_both_views(root, tmp_path):
    result = prepare_dataset("voc-21", _voc_raw(tmp_path), progress=False)
    assert result.written == 5
    for stem, raw in VOC_RAW.items():
        np.testing.assert_array_equal(_label("voc-21", stem), raw)
        np.testing.assert_array_equal(_label("voc-20", stem), raw)
    assert not (get_dataset("voc-21").root_path() / "JPEGImages/2007_000099.jpg").exists()
    assert check_dataset("voc-21", expected=2) == []
    assert check_dataset("voc-20", expected=2) == []
    assert prepare_dataset("voc-20", _voc_raw(tmp_path), progress=False).written == 0


def test_voc_rejects_non_voc_label_values(root, tmp_path):
    raw = _voc_raw(tmp_path)
    _png(raw / "VOCdevkit/VOC2012/SegmentationClass/2007_000042.png", np.array([[0, 21]]))
    with pytest.raises(OvssError, match="not VOC ids"):
        prepare_dataset("voc-21", raw, progress=False)


# --- COCO-Stuff ---------------------------------------------------------------------------


def test_coco_stuff_maps_to_contiguous_171_ids(root, tmp_path):
    raw = tmp_path / "raw"
    # stuffthingmaps value = COCO id - 1: 0 person, 11 unused id 12, 12 stop sign, 181 wood, 255 void, 90 unused id 91
    maps = {
        "000000000139": np.array([[0, 11, 12], [181, 255, 90]]),
        "000000000285": np.array([[25, 26, 27], [91, 0, 0]]),
    }
    for i, (stem, labels) in enumerate(maps.items()):
        _jpg(raw / "val2017" / f"{stem}.jpg", i)
        _png(raw / "stuffthingmaps_trainval2017/val2017" / f"{stem}.png", labels)
    assert main(["datasets", "prepare", "coco-stuff-171", "--raw", str(raw)]) == 0
    names = class_file("coco-stuff-171")["names"]
    np.testing.assert_array_equal(
        _label("coco-stuff-171", "000000000139"), [[0, 255, 11], [170, 255, 255]]
    )
    assert names[11] == "stop sign" and names[170] == "wood"
    # COCO id 26 is unused (value 25); 27 backpack, 28 umbrella; 92 banner (first stuff) is 80
    np.testing.assert_array_equal(
        _label("coco-stuff-171", "000000000285"), [[255, 24, 25], [80, 0, 0]]
    )
    assert names[24:26] == ["backpack", "umbrella"] and names[80] == "banner"
    assert check_dataset("coco-stuff-171", expected=2) == []


# --- check --------------------------------------------------------------------------------


def test_check_reports_count_and_out_of_range_labels_one_line_each(root, tmp_path, capsys):
    prepare_dataset("ade20k-150", _ade_raw(tmp_path), progress=False)
    dataset = get_dataset("ade20k-150")
    bad = dataset.root_path() / dataset.labels / "ADE_val_00000002.png"
    Image.fromarray(np.array([[150, 200], [255, 3]], dtype=np.uint8)).save(bad)
    problems = check_dataset("ade20k-150")
    assert problems == [
        "ade20k-150: 2 images, expected 2000",
        f"{bad}: label values 150, 200 outside 0..149 (ignore 255)",
    ]
    assert main(["datasets", "check", "ade20k-150"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == problems
    assert main(["datasets", "check", "ade20k-150", "--expected", "2"]) == 1
    assert capsys.readouterr().out.splitlines() == problems[1:]


def test_check_reports_a_missing_dataset_in_one_line(root):
    problems = check_dataset("coco-stuff-171")
    assert len(problems) == 1 and "is missing" in problems[0]


def test_prepare_rejects_unsupported_dataset_and_missing_raw(root, tmp_path):
    with pytest.raises(OvssError, match="supports"):
        prepare_dataset("ade20k-847", tmp_path, progress=False)
    with pytest.raises(OvssError, match="VOC2012 val split"):
        prepare_dataset("voc-21", tmp_path, progress=False)


def test_check_passes_on_mini_voc():
    assert check_dataset("mini-voc") == []


def test_prepare_reports_a_corrupt_raw_label(root, tmp_path):
    raw = _ade_raw(tmp_path)
    (raw / "ADEChallengeData2016/annotations/validation/ADE_val_00000002.png").write_bytes(b"x")
    with pytest.raises(OvssError, match=r"ADE_val_00000002\.png"):
        prepare_dataset("ade20k-150", raw, progress=False)
    # the finished outputs stay, the broken one is not written
    labels = get_dataset("ade20k-150").root_path() / "annotations_detectron2/validation"
    assert sorted(p.name for p in labels.iterdir()) == ["ADE_val_00000001.png"]
