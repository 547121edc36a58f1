"""Writing and reading what a segmentation leaves on disk.

For an output prefix ``P`` a worker writes:

- ``P.png``: the label map, a 16-bit grayscale PNG; each value indexes the vocabulary,
  ``65535`` means "no class";
- ``P.npz`` (optional): per-class scores ``[C, H, W]`` float32 under the key ``scores``;
- ``P.json``: the sidecar (timing, memory, vocabulary, provenance), written last.

Every file is written to a temporary name and renamed into place, so a worker killed
halfway never leaves a partial file behind under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ovss_common.protocol import NO_CLASS


class LabelMapError(Exception):
    """A label map that cannot be read; the message is one line naming the file."""


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_label_map(path: str | Path, label_map: np.ndarray) -> Path:
    """Write ``[H, W]`` integer labels in ``[0, 65535]`` as a 16-bit grayscale PNG."""
    labels = np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"a label map must be a 2-D integer array, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > NO_CLASS):
        raise ValueError("label map values must lie in [0, 65535]")
    image = Image.fromarray(labels.astype(np.uint16))
    return write_atomic(path, lambda file: image.save(file, format="PNG"))


def read_label_map(path: str | Path) -> np.ndarray:
    """Read a label map (8- or 16-bit PNG, palette PNG as indices, 16-bit TIFF) as ``[H, W]`` int64.

    Raises:
        LabelMapError: missing, unreadable, corrupt, multi-channel or floating-point file.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelMapError(f"{path}: no such label file")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1"):
                raise LabelMapError(
                    f"{path}: a label map must be single-channel integer, not mode {image.mode}"
                )
            labels = np.asarray(image)
    except UnidentifiedImageError:
        raise LabelMapError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise LabelMapError(f"{path}: corrupt or truncated label map ({exc})") from None
    return labels.astype(np.int64)


def write_scores(path: str | Path, scores: np.ndarray) -> Path:
    """Write per-class scores ``[C, H, W]`` as float32 under the key ``scores`` of an ``.npz``."""
    values = np.asarray(scores, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"scores must be [C, H, W], got shape {values.shape}")
    return write_atomic(path, lambda file: np.savez(file, scores=values))


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a JSON document atomically (UTF-8, indented, keys in insertion order)."""
    text = json.dumps(payload, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    return write_atomic(path, lambda file: file.write(text.encode("utf-8")))
