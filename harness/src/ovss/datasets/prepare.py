"""Convert official dataset downloads into the layout the registry reads, and check the result.

``prepare_dataset(name, raw)`` writes under ``$DETECTRON2_DATASETS`` the files that
``registry.BUILTIN_DATASETS`` expects, with the label conversions SAN's and OVSeg's own
dataset preparation applies (OVSeg's ADE-847 conversion is MaskFormer's):

- ``ade20k-150``: ``ADEChallengeData2016/annotations/validation/*.png`` → raw − 1, 0 → 255.
- ``ade20k-847``: the full ADE20K release ``ADE20K_2021_17_01``, as MaskFormer's
  ``prepare_ade20k_full_sem_seg.py`` (copied into OVSeg): the ADE object index
  int(R / 10) · 256 + G of each ``_seg.png`` pixel → the trainId whose ``ade_ids`` entry it is,
  everything else → 65535 (uint16 TIFF); images whose shorter side exceeds 512 are shrunk to 512
  (image bilinear, labels nearest, bit-exact with OpenCV's ``resize``) and every image is
  re-encoded as a default-quality JPEG. Upstream lists the ``ADE_val_*`` entries of
  ``index_ade20k.pkl``; here the pickle is not read, the validation images are found by walking
  ``images/ADE/validation/**/ADE_val_*.jpg`` (the same files in the release).
- ``pc-59`` / ``pc-459``: Pascal Context ``trainval/*.mat`` (``LabelMap``, labels.txt ids 1..459,
  0 = background; 16-bit ``.png``/``.tif`` label maps with the same values are accepted too) over
  the VOC2010 images. PC-459: LabelMap − 1 as uint16 TIFF, background → 65535. PC-59: each of the 59
  classes (matched by name to its 459 id) → its PC-59 id, everything else → 255.
- ``voc-20`` / ``voc-21``: the raw VOC2012 ``SegmentationClass`` PNGs are used as they are (both
  views read the same files); the val images, labels and split file are linked or copied.
- ``coco-stuff-171``: ``stuffthingmaps_trainval2017/val2017/*.png`` (COCO id − 1, 0..181, 255 =
  unlabeled) → the contiguous 0..170 index of the 171 used ids, unused ids and 255 → 255; the
  ``train2017`` maps likewise into the training split, when ``train2017`` images are present.

Every output is written to a temporary file and renamed, so a file that exists is complete and a
second run skips it. ``check_dataset(name)`` compares the image count with the known total and
every label value with the dataset's ids and ignore label, one line per problem.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ovss.datasets.label_spaces import get_label_space
from ovss.datasets.registry import TRAIN_SPLIT, Dataset, get_dataset
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

PREPARABLE = (
    "ade20k-150",
    "ade20k-847",
    "pc-59",
    "pc-459",
    "voc-20",
    "voc-21",
    "coco-stuff-171",
)


@dataclass
class PrepareResult:
    """What one ``prepare_dataset`` run did, and what it could not (``notes``, one line each)."""

    name: str
    root: Path
    written: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def _progress(label: str, total: int, enabled: bool) -> tqdm:
    """A progress bar on stderr (rate and time left), silent when not ``enabled``."""
    return tqdm(total=total, desc=label, unit="file", disable=not enabled, file=sys.stderr)


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
    with _progress(result.name, len(jobs), progress) as bar:
        for source, target in jobs:
            if target.exists():
                result.skipped += 1
            else:
                try:
                    convert(source, target)
                except LabelMapError as exc:
                    raise OvssError(str(exc)) from None
                result.written += 1
            bar.update()


def _sample_jobs(dataset: Dataset, image: Path, label: Path, stem: str) -> list[tuple[Path, Path]]:
    """The two jobs of one sample: its image and its label, each to its registry path."""
    root = dataset.root_path()
    return [
        (image, root / dataset.images / image.name),
        (label, root / dataset.labels / f"{stem}{dataset.label_suffix}"),
    ]


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
        jobs += _sample_jobs(dataset, _image_for(images, label.stem), label, label.stem)

    def convert(source: Path, target: Path) -> None:
        if source.suffix == ".png" and target.parent == root / dataset.labels:
            _save(target, _ade_150_labels(read_label_map(source)))
        else:
            _link_or_copy(source, target)

    _convert_all(result, jobs, convert, progress)


# --- ADE20K-847 ---------------------------------------------------------------------------

#: Upstream shrinks an image whose shorter side is longer than this to exactly this.
_ADE_FULL_SHORT_SIDE = 512


@contextmanager
def _pillow_errors(path: Path) -> Iterator[None]:
    """Turn Pillow's errors about ``path`` into one-line ``OvssError``s."""
    try:
        yield
    except UnidentifiedImageError:
        raise OvssError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise OvssError(f"{path}: corrupt or truncated image ({exc})") from None


def _read_pixels(path: Path, formats: tuple[str, ...], modes: tuple[str, ...]) -> np.ndarray:
    """The pixels of ``path`` as Pillow decodes them; it must be one of ``formats`` in ``modes``."""
    with _pillow_errors(path), Image.open(path) as image:
        if image.format not in formats or image.mode not in modes:
            raise OvssError(
                f"{path}: {image.format} image in mode {image.mode}, expected "
                f"{' or '.join(formats)} in mode {' or '.join(modes)}"
            )
        image.load()
        return np.asarray(image)


def _ade_full_size(height: int, width: int) -> tuple[int, int] | None:
    """Upstream's output ``(height, width)``: shorter side 512 if it is longer, else None."""
    side = _ADE_FULL_SHORT_SIDE
    if width >= height > side:
        return side, round(width / float(height) * side)
    if height >= width > side:
        return round(height / float(width) * side), side
    return None


def _source_step(source: int, target: int) -> float:
    """Source pixels per target pixel, computed as OpenCV's ``resize`` does (1 / (dst / src))."""
    return 1.0 / (target / source)


def _shrink_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV ``INTER_LINEAR`` taps along one axis when shrinking ``source`` pixels to ``target``.

    Target pixel ``i`` reads source pixels ``s`` and ``s + 1``, where ``s + f`` = (i + 0.5) ·
    step − 0.5 in float32, with 11-bit fixed-point weights (1 − f) · 2048 and f · 2048 rounded
    half to even. Shrinking keeps both taps inside the source.

    Returns:
        ``s`` ``[target]`` and the weights ``[2, target]`` (int32).
    """
    step = _source_step(source, target)
    position = ((np.arange(target) + 0.5) * step - 0.5).astype(np.float32)
    first = np.floor(position)
    fraction = position - first
    weights = np.stack([np.float32(1) - fraction, fraction]) * np.float32(2048)
    return first.astype(np.intp), np.rint(weights).astype(np.int32)


def _shrink_bilinear(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)`` for shrinking uint8.

    Bit-exact with OpenCV's 8-bit path: rows are filtered first in integers (source × weight,
    shifted right by 4), then each of the two rows is multiplied by its weight and shifted right
    by 16, and their sum is rounded and shifted right by 2.
    """
    rows, row_weights = _shrink_taps(pixels.shape[0], height)
    cols, col_weights = _shrink_taps(pixels.shape[1], width)
    source = pixels.astype(np.int32).reshape(pixels.shape[0], pixels.shape[1], -1)
    across = (
        source[:, cols] * col_weights[0, :, None] + source[:, cols + 1] * col_weights[1, :, None]
    ) >> 4
    down = ((across[rows] * row_weights[0, :, None, None]) >> 16) + (
        (across[rows + 1] * row_weights[1, :, None, None]) >> 16
    )
    return ((down + 2) >> 2).astype(np.uint8).reshape(height, width, *pixels.shape[2:])


def _shrink_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)`` when shrinking.

    Target pixel ``i`` is source pixel floor(i · step), in float64.
    """
    rows = np.floor(np.arange(height) * _source_step(labels.shape[0], height)).astype(np.intp)
    cols = np.floor(np.arange(width) * _source_step(labels.shape[1], width)).astype(np.intp)
    return labels[rows[:, None], cols[None, :]]


def _ade_full_lut() -> np.ndarray:
    """ADE object index → trainId (``ade_ids`` of ``ade20k-847.json``), everything else 65535."""
    lut = np.full(26 * 256, 65535, dtype=np.int64)  # int(R / 10) <= 25
    for train_id, ade_id in enumerate(class_file("ade20k-847")["ade_ids"]):
        lut[ade_id] = train_id
    return lut


def _ade_full_labels(segmentation: np.ndarray) -> np.ndarray:
    """The trainIds of an RGB(A) ``_seg.png``: object index int(R / 10) · 256 + G, via the LUT."""
    red = segmentation[..., 0].astype(np.int64)
    green = segmentation[..., 1].astype(np.int64)
    return _ade_full_lut()[red // 10 * 256 + green]


def _prepare_ade847(dataset: Dataset, raw: Path, result: PrepareResult, progress: bool) -> None:
    base = _find(raw, ("ADE20K_2021_17_01", ""), "ADE20K_2021_17_01")
    images = _find(base, ("images/ADE/validation",), "ADE20K_2021_17_01 validation images")
    root = dataset.root_path()
    jobs, seen = [], {}
    for image in sorted(images.rglob("ADE_val_*.jpg"), key=lambda path: path.name):
        if image.name in seen:
            raise OvssError(f"{image}: same file name as {seen[image.name]}")
        seen[image.name] = image
        segmentation = image.with_name(f"{image.stem}_seg.png")
        if not segmentation.is_file():
            raise OvssError(f"{segmentation}: label missing")
        jobs += _sample_jobs(dataset, image, segmentation, image.stem)

    def convert(source: Path, target: Path) -> None:
        if target.parent == root / dataset.labels:
            image = source.with_name(source.name.replace("_seg.png", ".jpg"))
            with _pillow_errors(image), Image.open(image) as opened:
                width, height = opened.size
            segmentation = _read_pixels(source, ("PNG",), ("RGB", "RGBA"))
            if segmentation.shape[:2] != (height, width):
                raise OvssError(
                    f"{source}: {segmentation.shape[1]}x{segmentation.shape[0]} pixels, but "
                    f"{image.name} is {width}x{height}"
                )
            labels = _ade_full_labels(segmentation)
            if (size := _ade_full_size(height, width)) is not None:
                labels = _shrink_nearest(labels, *size)
            _save(target, labels)
        else:
            pixels = _read_pixels(source, ("JPEG", "MPO"), ("RGB", "L"))
            if (size := _ade_full_size(*pixels.shape[:2])) is not None:
                pixels = _shrink_bilinear(pixels, *size)
            encoded = Image.fromarray(pixels)  # re-encoded with Pillow's defaults, as upstream
            write_atomic(target, lambda f: encoded.save(f, format="JPEG"))

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
        jobs += _sample_jobs(dataset, _image_for(images, stem), label, stem)

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
        jobs += _sample_jobs(dataset, _image_for(voc / "JPEGImages", stem), label, stem)
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


def _coco_jobs(dataset: Dataset, base: Path, folder: str) -> list[tuple[Path, Path]]:
    """The jobs of one COCO split (``val2017`` or ``train2017``) into ``dataset``'s folders."""
    images = _find(base, (folder, f"images/{folder}"), f"COCO {folder} images")
    maps = _find(
        base,
        (
            f"stuffthingmaps_trainval2017/{folder}",
            f"stuffthingmaps/{folder}",
            f"annotations/{folder}",
        ),
        f"COCO-Stuff stuffthingmaps {folder}",
    )
    jobs = []
    for label in sorted(maps.glob("*.png")):
        if label.stem.endswith("_labelTrainIds"):
            continue  # mmseg's converted copies beside the raw maps in annotations/<split>
        jobs += _sample_jobs(dataset, _image_for(images, label.stem), label, label.stem)
    return jobs


def _prepare_coco(dataset: Dataset, raw: Path, result: PrepareResult, progress: bool) -> None:
    base = _find(raw, ("coco", ""), "coco")
    jobs = _coco_jobs(dataset, base, "val2017")
    label_folders = {dataset.root_path() / dataset.labels}
    if any((base / folder).is_dir() for folder in ("train2017", "images/train2017")):
        train = dataset.part(TRAIN_SPLIT)
        jobs += _coco_jobs(train, base, "train2017")
        label_folders.add(train.root_path() / train.labels)
    else:
        result.notes.append("no train2017 images in --raw: prepared the val split only")
    lut = _coco_lut()

    def convert(source: Path, target: Path) -> None:
        if target.parent in label_folders:
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
        progress: draw a progress bar on stderr.
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
    elif name == "ade20k-847":
        _prepare_ade847(dataset, raw, result, progress)
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
    with _progress(f"check {name}", len(samples), progress) as bar:
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
            bar.update()
    return problems
