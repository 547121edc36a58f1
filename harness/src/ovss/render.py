"""Coloured overlays with a legend: how ``ovss segment`` and the demo show a label map.

A 16-bit index PNG looks black in an image viewer; the overlay blends one colour per class
over the image and lists the classes present in a legend. "No class" pixels (65535) are
left uncoloured and appear in the legend as "no class". ``side_by_side`` lines titled
panels up after the input image (the demo, the comparison report, the web demo).
"""

from __future__ import annotations

from dataclasses import dataclass

import imgviz
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ovss.metrics import NO_CLASS

NO_CLASS_NAME = "no class"


def _colormap(size: int) -> np.ndarray:
    """``[size, 3]`` uint8 colours: the VOC colour map, repeated past 256 entries."""
    return imgviz.label_colormap()[np.arange(size) % 256]


def overlay(rgb: np.ndarray, label_map: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Blend ``[H, W]`` vocabulary indices over ``[H, W, 3]`` uint8 RGB; returns ``[H, W, 3]`` uint8."""
    if rgb.shape[:2] != label_map.shape:
        raise ValueError(f"image {rgb.shape[:2]} and label map {label_map.shape} differ in size")
    shifted = label_map.astype(np.int64) + 1
    shifted[label_map == NO_CLASS] = 0
    alpha = {0: 0.0, **{index + 1: 0.5 for index in range(len(vocabulary))}}
    font_size = int(np.clip(min(rgb.shape[:2]) // 25, 10, 40))
    return imgviz.label2rgb(
        shifted,
        rgb,
        alpha=alpha,
        label_names=[NO_CLASS_NAME, *vocabulary],
        colormap=_colormap(len(vocabulary) + 1),
        font_size=font_size,
        loc="rb",
    )


@dataclass(frozen=True)
class Panel:
    """A titled ``[H, W, 3]`` uint8 picture, with an optional warning line under the title."""

    title: str
    picture: np.ndarray
    note: str | None = None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _titled(panel: Panel, height: int) -> Image.Image:
    """The panel's picture scaled to ``height`` under its title bar."""
    picture = Image.fromarray(panel.picture)
    width = max(1, round(picture.width * height / picture.height))
    picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    size = max(12, height // 22)
    bar = size * 2 + (size + 4 if panel.note else 0)
    canvas = Image.new("RGB", (width, height + bar), "white")
    canvas.paste(picture, (0, bar))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, size // 2), panel.title, fill="black", font=_font(size))
    if panel.note:
        draw.text((6, size * 2), panel.note, fill=(180, 0, 0), font=_font(max(10, size * 3 // 4)))
    return canvas


def error_picture(shape: tuple[int, int], message: str) -> np.ndarray:
    """A grey ``[H, W, 3]`` uint8 picture carrying ``message``, wrapped to its width."""
    canvas = Image.new("RGB", (shape[1], shape[0]), (200, 200, 200))
    size = max(10, shape[0] // 28)
    per_line = max(10, shape[1] // (size // 2 + 1))
    lines = [message[i : i + per_line] for i in range(0, len(message), per_line)]
    ImageDraw.Draw(canvas).multiline_text(
        (6, 6), "\n".join(lines), fill=(120, 0, 0), font=_font(size)
    )
    return np.asarray(canvas)


def side_by_side(rgb: np.ndarray, panels: list[Panel], max_height: int = 480) -> np.ndarray:
    """``[H', W', 3]`` uint8: the input image, then every panel, all at one height."""
    height = min(max_height, rgb.shape[0])
    titled = [_titled(Panel("input", rgb), height), *(_titled(p, height) for p in panels)]
    tallest = max(image.height for image in titled)
    gap = 8
    canvas = Image.new(
        "RGB", (sum(image.width for image in titled) + gap * (len(titled) - 1), tallest), "white"
    )
    x = 0
    for image in titled:
        canvas.paste(image, (x, tallest - image.height))
        x += image.width + gap
    return np.asarray(canvas)
