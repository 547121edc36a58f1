"""`ovss datasets prepare` / `check` on synthetic miniatures of each official download."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from ovss.cli import main
from ovss.datasets import get_dataset
from ovss.datasets.prepare import (
    _shrink_bilinear,
    _shrink_nearest,
    check_dataset,
    prepare_dataset,
)
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


def test_progress_bars_count_every_file(root, tmp_path, capsys):
    prepare_dataset("ade20k-150", _ade_raw(tmp_path))
    err = capsys.readouterr().err
    assert "ade20k-150: 100%" in err and "4/4" in err
    check_dataset("ade20k-150", progress=True)
    assert "check ade20k-150: 100%" in capsys.readouterr().err


# --- ADE20K-847 ---------------------------------------------------------------------------

ADE_IDS = class_file("ade20k-847")["ade_ids"]
ADE_VAL = "ADE20K_2021_17_01/images/ADE/validation"
ADE_FOLDERS = {"ADE_val_00000001": "cultural/apse_indoor", "ADE_val_00000002": "urban/street"}

# ADE object indices per pixel: 2978 wall (trainId 0), 6 "ad" (263), 3156 alga (358, the largest
# index); 1..5 and 3157 are not among the 847 and 0 is unlabeled (all → 65535)
ADE_FULL_RAW = {
    "ADE_val_00000001": np.array(
        [[2978, 2978, 6, 0, 1], [312, 3156, 3157, 2978, 0], [0, 0, 6, 6, 2420], [1, 2, 3, 4, 5]]
    ),
    "ADE_val_00000002": np.array(
        [[0, 0, 0, 0, 0], [1831, 1831, 0, 0, 0], [90, 90, 90, 0, 0], [3124, 0, 0, 0, 2978]]
    ),
}


def _seg_png(path: Path, objects: np.ndarray) -> None:
    """An ADE ``_seg.png``: R = index // 256 · 10 + (0..9), G = index % 256, B = any instance."""
    rng = np.random.default_rng(int(objects.sum()))
    extra = rng.integers(0, 10, objects.shape)  # int(R / 10) drops it
    pixels = np.stack(
        [objects // 256 * 10 + extra, objects % 256, rng.integers(0, 256, objects.shape)], -1
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _ade_full_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    for i, (stem, objects) in enumerate(ADE_FULL_RAW.items()):
        _jpg(raw / ADE_VAL / ADE_FOLDERS[stem] / f"{stem}.jpg", i)
        _seg_png(raw / ADE_VAL / ADE_FOLDERS[stem] / f"{stem}_seg.png", objects)
    # the release's other files next to each image, and a training image: not converted
    first = raw / ADE_VAL / "cultural/apse_indoor/ADE_val_00000001"
    _png(first.with_name("ADE_val_00000001_parts_1.png"), np.zeros((4, 5)))
    first.with_suffix(".json").write_text("{}")
    _png(first / "instance_000_ADE_val_00000001.png", np.zeros((4, 5)))
    train = raw / "ADE20K_2021_17_01/images/ADE/training/urban/street/ADE_train_00000001"
    _jpg(train.with_suffix(".jpg"), 7)
    _seg_png(train.with_name("ADE_train_00000001_seg.png"), np.full((4, 5), 2978))
    return raw


def _reencoded(pixels: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return np.asarray(Image.open(buffer))


def test_ade847_maps_ade_object_indices_to_train_ids(root, tmp_path):
    assert (len(ADE_IDS), ADE_IDS[0], ADE_IDS[263], ADE_IDS[358]) == (847, 2978, 6, 3156)
    names = class_file("ade20k-847")["names"]
    assert (names[0], names[358]) == ("wall", "alga, algae")
    raw = _ade_full_raw(tmp_path)
    result = prepare_dataset("ade20k-847", raw, progress=False)
    assert (result.written, result.skipped) == (4, 0)
    dataset = get_dataset("ade20k-847")
    expected = {
        "ADE_val_00000001": [
            [0, 0, 263, 65535, 65535],
            [1, 358, 65535, 0, 65535],
            [65535, 65535, 263, 263, 2],
            [65535] * 5,
        ],
        "ADE_val_00000002": [
            [65535] * 5,
            [11, 11, 65535, 65535, 65535],
            [239, 239, 239, 65535, 65535],
            [782, 65535, 65535, 65535, 0],
        ],
    }
    for stem in ADE_FULL_RAW:
        with Image.open(dataset.root_path() / dataset.labels / f"{stem}.tif") as image:
            assert image.mode == "I;16"
        np.testing.assert_array_equal(_label("ade20k-847", stem), expected[stem])
        # small images keep their size but are re-encoded, as upstream
        source = np.asarray(Image.open(raw / ADE_VAL / ADE_FOLDERS[stem] / f"{stem}.jpg"))
        with Image.open(dataset.root_path() / dataset.images / f"{stem}.jpg") as image:
            assert image.format == "JPEG"
            np.testing.assert_array_equal(np.asarray(image), _reencoded(source))
    assert [s.stem for s in dataset.samples()] == list(ADE_FULL_RAW)
    assert check_dataset("ade20k-847", expected=2) == []
    # resumable: a second run writes nothing
    again = prepare_dataset("ade20k-847", raw, progress=False)
    assert (again.written, again.skipped) == (0, 4)


def test_ade847_shrinks_the_shorter_side_to_512_as_upstream(root, tmp_path):
    stem = tmp_path / "raw" / ADE_VAL / "nature/field/ADE_val_00000003"
    stem.parent.mkdir(parents=True)
    pixels = np.random.default_rng(3).integers(0, 256, (520, 780, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(stem.with_suffix(".jpg"))
    objects = np.where(np.arange(780) % 3 == 0, 2978, 6)[None].repeat(520, 0)
    objects[::4] = 0
    _seg_png(stem.with_name(f"{stem.name}_seg.png"), objects)
    prepare_dataset("ade20k-847", tmp_path / "raw", progress=False)
    labels = _label("ade20k-847", stem.name)
    assert labels.shape == (512, 768)
    full = np.select([objects == 2978, objects == 6], [0, 263], 65535)
    np.testing.assert_array_equal(labels, _shrink_nearest(full, 512, 768))
    dataset = get_dataset("ade20k-847")
    with Image.open(dataset.root_path() / dataset.images / f"{stem.name}.jpg") as image:
        assert image.size == (768, 512)
        source = np.asarray(Image.open(stem.with_suffix(".jpg")))
        np.testing.assert_array_equal(
            np.asarray(image), _reencoded(_shrink_bilinear(source, 512, 768))
        )


def test_shrinking_is_bit_exact_with_opencv():
    """Expected values from ``cv2.resize`` (OpenCV 4.6.0 and 4.12.0 agree)."""
    pixels = (np.arange(7 * 9 * 3) * 37 % 256).reshape(7, 9, 3).astype(np.uint8)
    np.testing.assert_array_equal(
        _shrink_bilinear(pixels, 3, 4),
        [
            [[117, 89, 127], [78, 105, 120], [40, 77, 114], [140, 71, 108]],
            [[90, 127, 164], [20, 57, 94], [206, 19, 56], [136, 173, 50]],
            [[192, 122, 106], [186, 223, 36], [147, 184, 221], [173, 114, 151]],
        ],
    )
    gray = (np.arange(5 * 11) * 23 % 256).reshape(5, 11).astype(np.uint8)
    np.testing.assert_array_equal(
        _shrink_bilinear(gray, 3, 6),
        [[58, 51, 93, 135, 177, 219], [153, 46, 88, 130, 172, 214], [148, 41, 83, 125, 167, 209]],
    )
    np.testing.assert_array_equal(
        _shrink_nearest(pixels[..., 0], 3, 4),
        [[0, 222, 188, 154], [206, 172, 138, 104], [156, 122, 88, 54]],
    )
    # OpenCV steps by 1 / (512 / 744), just under 744 / 512: target column 64 reads 92, not 93
    columns = _shrink_nearest(np.arange(744)[None], 1, 512)[0]
    assert columns[[63, 64, 65, 128, 511]].tolist() == [91, 92, 94, 185, 742]


def test_ade847_reports_bad_inputs_in_one_line(root, tmp_path):
    raw = _ade_full_raw(tmp_path)
    folder = raw / ADE_VAL / "urban/street"
    (folder / "ADE_val_00000002_seg.png").write_bytes(b"x")
    with pytest.raises(OvssError, match=r"ADE_val_00000002_seg\.png: not an image") as error:
        prepare_dataset("ade20k-847", raw, progress=False)
    assert "\n" not in str(error.value)
    # the finished outputs stay, the broken one is not written
    dataset = get_dataset("ade20k-847")
    labels = dataset.root_path() / dataset.labels
    assert sorted(p.name for p in labels.iterdir()) == ["ADE_val_00000001.tif"]
    (dataset.root_path() / dataset.images / "ADE_val_00000002.jpg").unlink()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(folder / "ADE_val_00000002.jpg", "PNG")
    with pytest.raises(OvssError, match=r"ADE_val_00000002\.jpg: PNG image in mode RGB, expected"):
        prepare_dataset("ade20k-847", raw, progress=False)
    _jpg(folder / "ADE_val_00000002.jpg", 1)
    _seg_png(folder / "ADE_val_00000002_seg.png", np.zeros((3, 5), np.int64))
    with pytest.raises(OvssError, match=r"_seg\.png: 5x3 pixels, but ADE_val_00000002\.jpg is 5x4"):
        prepare_dataset("ade20k-847", raw, progress=False)
    (folder / "ADE_val_00000002_seg.png").unlink()
    with pytest.raises(OvssError, match=r"ADE_val_00000002_seg\.png: label missing"):
        prepare_dataset("ade20k-847", raw, progress=False)
    with pytest.raises(OvssError, match="ADE20K_2021_17_01 validation images not found"):
        prepare_dataset("ade20k-847", tmp_path, progress=False)


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


def test_coco_stuff_maps_to_contiguous_171_ids(root, tmp_path, capsys):
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
    assert "no train2017 images in --raw: prepared the val split only" in capsys.readouterr().err


def test_coco_stuff_train2017_becomes_the_training_split(root, tmp_path):
    """The 164k layout (images/, annotations/ with mmseg's converted copies beside the maps)."""
    raw = tmp_path / "raw" / "coco"
    _jpg(raw / "images/val2017/000000000139.jpg", 0)
    _png(raw / "annotations/val2017/000000000139.png", np.array([[0, 255]]))
    train = {"000000000009": np.array([[0, 11], [181, 255]]), "000000000025": np.array([[90, 12]])}
    for i, (stem, labels) in enumerate(train.items()):
        _jpg(raw / "images/train2017" / f"{stem}.jpg", i + 1)
        _png(raw / "annotations/train2017" / f"{stem}.png", labels)
        _png(raw / "annotations/train2017" / f"{stem}_labelTrainIds.png", labels)
    result = prepare_dataset("coco-stuff-171", raw.parent, progress=False)
    assert (result.written, result.notes) == (6, [])
    coco = get_dataset("coco-stuff-171")
    assert [s.stem for s in coco.samples()] == ["000000000139"]
    samples = coco.samples(split="train")
    assert [s.stem for s in samples] == list(train)
    assert samples[0].image == root / "coco/train2017/000000000009.jpg"
    assert samples[0].label == root / "coco/stuffthingmaps_detectron2/train2017/000000000009.png"
    np.testing.assert_array_equal(read_label_map(samples[0].label), [[0, 255], [170, 255]])
    np.testing.assert_array_equal(read_label_map(samples[1].label), [[255, 11]])
    assert prepare_dataset("coco-stuff-171", raw.parent, progress=False).skipped == 6


def test_coco_stuff_train2017_without_its_maps_is_one_line(root, tmp_path):
    raw = tmp_path / "raw"
    _jpg(raw / "val2017/000000000139.jpg", 0)
    _png(raw / "stuffthingmaps/val2017/000000000139.png", np.array([[0, 255]]))
    _jpg(raw / "train2017/000000000009.jpg", 1)
    with pytest.raises(OvssError, match="COCO-Stuff stuffthingmaps train2017 not found"):
        prepare_dataset("coco-stuff-171", raw, progress=False)


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
        prepare_dataset("mini-voc", tmp_path, progress=False)
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
