"""Image decoding the way the original methods decode: ``Image.open(path).convert("RGB")``.

- alpha is dropped, not composited; grayscale and palette images are replicated to RGB;
- EXIF orientation is applied only when asked (SAN and OVSeg do, through detectron2; CaR does not);
- 16-bit images are scaled to 8 bits (value * 255 / 65535, rounded), said in one line on stderr;
- multi-frame files use their first frame, said the same way.

Every failure is an ``ImageError`` with one line that names the file and what is wrong.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112


class ImageError(Exception):
    """An image that cannot be used; the message is one line naming the file."""


@dataclass
class DecodedImage:
    """An RGB image as the methods consume it.

    Attributes:
        rgb: ``[H, W, 3]`` uint8 array.
        path: the file it came from.
        source_mode: the PIL mode on disk (``"RGB"``, ``"L"``, ``"RGBA"``, ``"I;16"``, ...).
        exif_transposed: whether an EXIF orientation other than "normal" was applied.
        notes: human-readable warnings about the conversion (16-bit scaled, frames dropped).
    """

    rgb: np.ndarray
    path: Path
    source_mode: str
    exif_transposed: bool
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def sidecar(self) -> dict[str, object]:
        """What the sidecar records about decoding."""
        return {
            "path": str(self.path),
            "height": self.height,
            "width": self.width,
            "source_mode": self.source_mode,
            "exif_transposed": self.exif_transposed,
            "notes": list(self.notes),
        }


def _scale_sixteen_bit(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    scaled = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def read_image(path: str | Path, *, exif_transpose: bool) -> DecodedImage:
    """Decode ``path`` into an RGB uint8 array.

    Args:
        path: an image file Pillow can read.
        exif_transpose: apply the EXIF orientation tag (as detectron2's ``read_image`` does).

    Raises:
        ImageError: the file is missing, not an image, truncated, empty or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                source_mode = opened.mode
                if getattr(opened, "n_frames", 1) > 1:
                    notes.append(f"{opened.n_frames} frames; the first is used")
                orientation = opened.getexif().get(_EXIF_ORIENTATION, 1)
                transposed = exif_transpose and orientation not in (None, 1)
                image = ImageOps.exif_transpose(opened) if transposed else opened
                image.load()
                if image.mode in _SIXTEEN_BIT_MODES:
                    notes.append(f"{image.mode} image scaled to 8 bits")
                    image = _scale_sixteen_bit(image)
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: image too large ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"{path}: image has no pixels")
    for note in notes:
        print(f"note: {path}: {note}", file=sys.stderr, flush=True)
    return DecodedImage(
        rgb=rgb, path=path, source_mode=source_mode, exif_transposed=transposed, notes=notes
    )
