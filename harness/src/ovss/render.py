"""Coloured overlays with a legend: how ``ovss segment`` and the demo show a label map.

A 16-bit index PNG looks black in an image viewer; the overlay blends one colour per class
over the image and lists the classes present in a legend. "No class" pixels (65535) are
left uncoloured and appear in the legend as "no class".
"""

from __future__ import annotations

import imgviz
import numpy as np

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
