"""``ovss segment``: segment images with any vocabulary through a method worker.

For every input image ``DIR/<stem>.png`` (16-bit vocabulary indices, 65535 = no class),
``DIR/<stem>.json`` (sidecar, with the harness's provenance, which travels in the request)
and, with ``save_scores``, ``DIR/<stem>.npz`` are written by the worker; the harness renders
``DIR/overlays/<stem>.png``, a coloured overlay with a legend.
"""

from __future__ import annotations

import glob
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ovss.environments import get_method
from ovss.errors import OvssError
from ovss.provenance import provenance
from ovss.render import overlay
from ovss.worker import ModelSettings, Worker, WorkerDied, WorkerFailure
from ovss_common.images import ImageError, read_image
from ovss_common.outputs import read_label_map, write_atomic
from ovss_common.protocol import SegmentRequest


@dataclass
class SegmentSettings:
    """Everything ``ovss segment`` is told besides the model."""

    model: ModelSettings
    images: list[Path]
    vocabulary: list[str]
    out: Path
    save_scores: bool = False
    stuff: list[str] | None = None


#: What a folder or a pattern given as ``--image`` expands to (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_PATTERN = re.compile(r"[*?\[]")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def expand_images(inputs: list[Path]) -> list[Path]:
    """``--image`` arguments as image files: a folder gives its images (not its sub-folders'),
    a glob pattern (``photos/*.jpg``, ``**`` allowed) the files it matches, anything else
    itself; each file once, in the order given.

    Raises:
        OvssError: a folder without images, or a pattern that matches no file.
    """
    images: dict[Path, None] = {}
    for given in inputs:
        if given.is_dir():
            found = _images_in(given)
            if not found:
                suffixes = ", ".join(IMAGE_SUFFIXES)
                raise OvssError(f"{given}: a folder without images ({suffixes})")
        elif not given.exists() and _PATTERN.search(str(given)):
            found = sorted(Path(p) for p in glob.glob(str(given), recursive=True))
            found = [p for p in found if p.is_file()]
            if not found:
                raise OvssError(f"{given}: the pattern matches no file")
        else:
            found = [given]
        images.update(dict.fromkeys(found))
    return list(images)


def _check_stems(images: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise OvssError(
                f"{image} and {seen[image.stem]} share the stem {image.stem!r}; "
                "their outputs would overwrite each other in one --out"
            )
        seen[image.stem] = image


def render_overlay(image_path: Path, label_path: Path, sidecar: dict[str, Any], out: Path) -> Path:
    """Write the overlay of one segmentation, decoding the image as the worker did."""
    decoded = read_image(image_path, exif_transpose=sidecar["image"]["exif_transposed"])
    picture = overlay(decoded.rgb, read_label_map(label_path), sidecar["effective_vocabulary"])
    return write_atomic(out, lambda file: Image.fromarray(picture).save(file, format="PNG"))


def run_segment(settings: SegmentSettings) -> list[dict[str, Any]]:
    """Segment every image; returns one reply per image that succeeded.

    Raises:
        OvssError: after processing all images, if any of them failed.
    """
    _check_stems(settings.images)
    package = get_method(settings.model.method)
    settings.out.mkdir(parents=True, exist_ok=True)
    results, failed = [], []
    with Worker(package, settings.model.load_request(), timeout=settings.model.timeout) as worker:
        record = provenance(
            package,
            worker.load_info,
            settings.vocabulary,
            protocol="segment",
            untrained_weights=settings.model.untrained,
        )
        for image in settings.images:
            try:
                reply = worker.segment(
                    SegmentRequest(
                        image=str(image),
                        vocabulary=settings.vocabulary,
                        output_prefix=str(settings.out / image.stem),
                        save_scores=settings.save_scores,
                        stuff=settings.stuff,
                        provenance=record,
                    )
                )
                sidecar = json.loads(Path(reply["sidecar"]).read_text(encoding="utf-8"))
                reply["overlay"] = str(
                    render_overlay(
                        image,
                        Path(reply["label_map"]),
                        sidecar,
                        settings.out / "overlays" / f"{image.stem}.png",
                    )
                )
            except (WorkerFailure, WorkerDied, ImageError, OvssError) as error:
                print(f"ovss: {image}: {error}", file=sys.stderr)
                failed.append(str(image))
                continue
            results.append(reply)
            print(f"ovss: {image} -> {reply['label_map']}", file=sys.stderr)
    if failed:
        raise OvssError(
            f"{len(failed)} of {len(settings.images)} images failed: {', '.join(failed)}"
        )
    return results
