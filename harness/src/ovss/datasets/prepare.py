"""Convert official dataset downloads into the layout the registry reads, and check the result.

``prepare_dataset(name, raw)`` writes under ``$DETECTRON2_DATASETS`` the files that
``registry.BUILTIN_DATASETS`` expects, with the label conversions of the upstream preparation
scripts (upstream_spec.md §0.4):

- ``ade20k-150``: ``ADEChallengeData2016/annotations/validation/*.png`` → raw − 1, 0 → 255.
- ``pc-59`` / ``pc-459``: Pascal Context ``trainval/*.mat`` (``LabelMap``, labels.txt ids 1..459,
  0 = background; 16-bit ``.png``/``.tif`` label maps with the same values are accepted too) over
  the VOC2010 images. PC-459: LabelMap − 1 as uint16 TIFF, background → 65535. PC-59: each of the 59
  classes (matched by name to its 459 id) → its PC-59 id, everything else → 255.
- ``voc-20`` / ``voc-21``: the raw VOC2012 ``SegmentationClass`` PNGs are used as they are (both
  views read the same files); the val images, labels and split file are linked or copied.
- ``coco-stuff-171``: ``stuffthingmaps_trainval2017/val2017/*.png`` (COCO id − 1, 0..181, 255 =
  unlabeled) → the contiguous 0..170 index of the 171 used ids, unused ids and 255 → 255.

Every output is written to a temporary file and renamed, so a file that exists is complete and a
second run skips it. ``check_dataset(name)`` compares the image count with the known total and
every label value with the dataset's ids and ignore label, one line per problem.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ovss.datasets.label_spaces import get_label_space
from ovss.datasets.registry import Dataset, get_dataset
from ovss.errors import OvssError
from ovss_common.class_lists import class_file
from ovss_common.outputs import LabelMapError, read_label_map, write_atomic

#: Validation image counts of the full benchmarks.
EXPECTED_COUNTS: dict[str, int] = {
    "ade20k-150": 2000,
    "ade20k-847": 2000,
    "pc-59": 5105,
    "pc-459": 5105,
    "voc-20": 1449,
    "voc-21": 1449,
    "coco-stuff-171": 5000,
}

PREPARABLE = ("ade20k-150", "pc-59", "pc-459", "voc-20", "voc-21", "coco-stuff-171")


@dataclass
class PrepareResult:
    """What one ``prepare_dataset`` run did."""

    name: str
    root: Path
    written: int = 0
    skipped: int = 0


class _Progress:
    """A one-line ``\\r`` counter on stderr."""

    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label, self.total, self.enabled, self.done = label, total, enabled, 0

    def step(self) -> None:
        self.done += 1
        if self.enabled and (self.done == self.total or self.done % 25 == 0):
            end = "\n" if self.done == self.total else ""
            print(f"\r{self.label}: {self.done}/{self.total}", end=end, file=sys.stderr, flush=True)


def _find(raw: Path, candidates: Iterable[str], what: str) -> Path:
    """The first of ``raw/candidate`` that exists."""
    tried = []
    for candidate in candidates:
        path = raw / candidate if candidate else raw
        if path.exists():
            return path
        tried.append(str(path))
    raise OvssError(f"{what} not found; looked for {', '.join(tried)}")


def _read_stems(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (copy across file systems), atomically."""
    if source.resolve() == target.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.link.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _save(target: Path, labels: np.ndarray) -> None:
    """Write a label map: uint8 PNG for ``.png``, uint16 deflate TIFF for ``.tif``."""
    if target.suffix == ".tif":
        image = Image.fromarray(labels.astype(np.uint16))
        write_atomic(target, lambda f: image.save(f, format="TIFF", compression="tiff_deflate"))
    else:
        image = Image.fromarray(labels.astype(np.uint8))
        write_atomic(target, lambda f: image.save(f, format="PNG"))


def _convert_all(
    result: PrepareResult,
    jobs: list[tuple[Path, Path]],
    convert: Callable[[Path, Path], None],
    progress: bool,
) -> None:
    """Run ``convert(source, target)`` for every job whose target does not exist yet."""
    counter = _Progress(result.name, len(jobs), progress)
    for source, target in jobs:
        if target.exists():
            result.skipped += 1
        else:
            try:
                convert(source, target)
            except LabelMapError as exc:
                raise OvssError(str(exc)) from None
            result.written += 1
        counter.step()


def _image_for(folder: Path, stem: str) -> Path:
    for suffix in (".jpg", ".png", ".jpeg"):
        if (path := folder / f"{stem}{suffix}").is_file():
            return path
    raise OvssError(f"{folder / stem}.jpg: image missing")


# --- ADE20K-150 ---------------------------------------------------------------------------


def _ade_150_labels(raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.int64) - 1
    out[raw == 0] = 255
    return out


def _prepare_ade150(dataset: Dataset, raw: Path, result: PrepareResult, progress: bool) -> None:
    base = _find(raw, ("ADEChallengeData2016", ""), "ADEChallengeData2016")
    images = _find(base, ("images/validation",), "ADE validation images")
    annotations = _find(base, ("annotations/validation",), "ADE validation annotations")
    root = dataset.root_path()
    jobs = []
    for label in sorted(annotations.glob("*.png")):
        image = _image_for(images, label.stem)
        jobs.append((image, root / dataset.images / image.name))
        jobs.append((label, root / dataset.labels / label.name))

    def convert(source: Path, target: Path) -> None:
        if source.suffix == ".png" and target.parent == root / dataset.labels:
            _save(target, _ade_150_labels(read_label_map(source)))
        else:
            _link_or_copy(source, target)

    _convert_all(result, jobs, convert, progress)


# --- Pascal Context -----------------------------------------------------------------------


def _read_context_labelmap(path: Path) -> np.ndarray:
    """A Pascal Context LabelMap (459 ids, 0 = background) from ``.mat`` or a 16-bit image."""
    if path.suffix == ".mat":
        from scipy.io import loadmat  # scipy comes with scikit-image

        return np.asarray(loadmat(str(path))["LabelMap"], dtype=np.int64)
    return read_label_map(path)


def _pc59_lut() -> np.ndarray:
    """459 id (1-based, labels.txt) → PC-59 id, everything else 255."""
    names459 = class_file("pc-459")["names"]
    lut = np.full(len(names459) + 1, 255, dtype=np.int64)
    for pc59_id, name in enumerate(class_file("pc-59")["names"]):
        lut[names459.index(name) + 1] = pc59_id
    return lut


def _context_labels(name: str, labelmap: np.ndarray) -> np.ndarray:
    if labelmap.min() < 0 or labelmap.max() > 459:
        raise OvssError(f"Pascal Context LabelMap values outside 0..459 ({labelmap.max()})")
    if name == "pc-59":
        return _pc59_lut()[labelmap]
    out = labelmap - 1
    out[labelmap == 0] = 65535
    return out


def _prepare_context(
    dataset: Dataset, raw: Path, result: PrepareResult, progress: bool, split: Path | None
) -> None:
    voc = _find(raw, ("VOCdevkit/VOC2010", "VOC2010", ""), "VOC2010")
    images = _find(voc, ("JPEGImages",), "VOC2010 JPEGImages")
    annotations = _find(raw, ("trainval", "pascal_context/trainval"), "Pascal Context trainval/")
    if split is None:
        split = _find(
            raw,
            ("pascalcontext_val.txt", "val.txt", f"{voc.relative_to(raw)}/ImageSets/Main/val.txt"),
            "a Pascal Context val split (or pass --split)",
        )
    root = dataset.root_path()
    jobs = []
    for stem in _read_stems(split):
        label = next(
            (p for s in (".mat", ".png", ".tif") if (p := annotations / f"{stem}{s}").is_file()),
            None,
        )
        if label is None:
            continue  # upstream converts only the val images that have an annotation
        image = _image_for(images, stem)
        jobs.append((image, root / dataset.images / image.name))
        jobs.append((label, root / dataset.labels / f"{stem}{dataset.label_suffix}"))

    def convert(source: Path, target: Path) -> None:
        if target.parent == root / dataset.labels:
            _save(target, _context_labels(dataset.name, _read_context_labelmap(source)))
        else:
            _link_or_copy(source, target)

    _convert_all(result, jobs, convert, progress)


# --- VOC ----------------------------------------------------------------------------------


def _prepare_voc(dataset: Dataset, raw: Path, result: PrepareResult, progress: bool) -> None:
    voc = _find(raw, ("VOCdevkit/VOC2012", "VOC2012", ""), "VOC2012")
    split = _find(voc, ("ImageSets/Segmentation/val.txt",), "VOC2012 val split")
    root = dataset.root_path()
    jobs = []
    for stem in _read_stems(split):
        label = voc / "SegmentationClass" / f"{stem}.png"
        if not label.is_file():
            raise OvssError(f"{label}: label missing")
        values = np.unique(read_label_map(label))
        if values.size and ((values > 20) & (values != 255)).any():
            raise OvssError(f"{label}: values {values.tolist()} are not VOC ids (0..20, 255)")
        image = _image_for(voc / "JPEGImages", stem)
        jobs.append((image, root / dataset.images / image.name))
        jobs.append((label, root / dataset.labels / label.name))
    if dataset.split:  # last: the split file is what makes the registry see the dataset
        jobs.append((split, root / dataset.split))
    _convert_all(result, jobs, _link_or_copy, progress)


# --- COCO-Stuff ---------------------------------------------------------------------------


def _coco_lut() -> np.ndarray:
    """stuffthingmaps value (COCO id − 1) → contiguous 0..170, everything else 255."""
    lut = np.full(256, 255, dtype=np.int64)
    for index, coco_id in enumerate(class_file("coco-stuff-171")["coco_category_ids"]):
        lut[coco_id - 1] = index
    return lut


def _prepare_coco(dataset: Dataset, raw: Path, result: PrepareResult, progress: bool) -> None:
    base = _find(raw, ("coco", ""), "coco")
    images = _find(base, ("val2017",), "COCO val2017 images")
    maps = _find(
        base,
        ("stuffthingmaps_trainval2017/val2017", "stuffthingmaps/val2017"),
        "COCO-Stuff stuffthingmaps val2017",
    )
    root = dataset.root_path()
    lut = _coco_lut()
    jobs = []
    for label in sorted(maps.glob("*.png")):
        image = _image_for(images, label.stem)
        jobs.append((image, root / dataset.images / image.name))
        jobs.append((label, root / dataset.labels / label.name))

    def convert(source: Path, target: Path) -> None:
        if target.parent == root / dataset.labels:
            values = read_label_map(source)
            if values.max(initial=0) > 255:
                raise OvssError(f"{source}: values above 255 are not stuffthingmaps ids")
            _save(target, lut[values])
        else:
            _link_or_copy(source, target)

    _convert_all(result, jobs, convert, progress)


def prepare_dataset(
    name: str, raw: Path, *, split: Path | None = None, progress: bool = True
) -> PrepareResult:
    """Convert the official download under ``raw`` into ``name``'s registry layout.

    Args:
        name: a built-in dataset in ``PREPARABLE``.
        raw: the folder holding the extracted download(s).
        split: Pascal Context only: the val stems file (default: ``pascalcontext_val.txt`` or
            ``val.txt`` in ``raw``, else VOC2010's ``ImageSets/Main/val.txt``).
        progress: print a counter on stderr.
    """
    if name not in PREPARABLE:
        raise OvssError(f"'ovss datasets prepare' supports {', '.join(PREPARABLE)}, not {name!r}")
    raw = Path(raw).expanduser()
    if not raw.is_dir():
        raise OvssError(f"{raw}: no such folder")
    dataset = get_dataset(name)
    result = PrepareResult(name=name, root=dataset.root_path())
    if name == "ade20k-150":
        _prepare_ade150(dataset, raw, result, progress)
    elif name in ("pc-59", "pc-459"):
        _prepare_context(dataset, raw, result, progress, split)
    elif name in ("voc-20", "voc-21"):
        _prepare_voc(dataset, raw, result, progress)
    else:
        _prepare_coco(dataset, raw, result, progress)
    return result


def check_dataset(name: str, *, expected: int | None = None, progress: bool = False) -> list[str]:
    """Problems with ``name`` on disk, one line each; empty when it matches the known totals.

    Args:
        expected: the image count to expect (default: ``EXPECTED_COUNTS``; none for others).
    """
    dataset = get_dataset(name)
    try:
        samples = dataset.samples()
    except OvssError as exc:
        return [str(exc)]
    problems = []
    expected = EXPECTED_COUNTS.get(name) if expected is None else expected
    if expected is not None and len(samples) != expected:
        problems.append(f"{name}: {len(samples)} images, expected {expected}")
    if dataset.custom_space is not None:
        space = dataset.custom_space
        on_disk = space.num_classes
    else:
        space = get_label_space(dataset.label_space)
        on_disk = space.num_classes + (1 if space.drop_first else 0)
    counter = _Progress(f"check {name}", len(samples), progress)
    for sample in samples:
        try:
            labels = read_label_map(sample.label)
        except LabelMapError as exc:
            problems.append(str(exc))
        else:
            values = np.unique(labels)
            bad = values[(values >= on_disk) & (values != space.ignore_label)]
            if bad.size:
                shown = ", ".join(str(v) for v in bad[:5]) + (", …" if bad.size > 5 else "")
                problems.append(
                    f"{sample.label}: label values {shown} outside 0..{on_disk - 1} "
                    f"(ignore {space.ignore_label})"
                )
        counter.step()
    return problems
