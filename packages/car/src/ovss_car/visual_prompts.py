"""CaR's visual prompts: mark one region of an image for the classifier.

Prompts are applied in the original's fixed order (blur, gray, black, circle, rectangle,
contour), whatever order the config lists them in, on an RGB array. Quirks kept: "gray"
converts with OpenCV's BGR weights (the array is RGB), and the marks are drawn in (255, 0, 0),
which on RGB is red. An empty mask gets no mark (the original crashes on it).
"""

from __future__ import annotations

import cv2
import numpy as np

PROMPT_TYPES = ("blur", "gray", "black", "circle", "rectangle", "contour")
MARK_COLOUR = (255, 0, 0)
BLUR_KERNEL = (15, 15)


def _keep(image: np.ndarray, mask: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """``image`` inside the mask, ``outside`` elsewhere (uint8)."""
    inside = cv2.bitwise_and(image, image, mask=mask)
    return cv2.add(inside, (outside * (1 - mask)[:, :, None]).astype(np.uint8))


def _centre_and_extent(mask: np.ndarray) -> tuple[tuple[int, int], int, int]:
    """((row, col) of the mean mask pixel, truncated), bbox height, bbox width."""
    rows, cols = np.where(mask == 1)
    centre = (int(np.mean(rows)), int(np.mean(cols)))
    return centre, int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Mask with enclosed background (4-connected to no border) filled in."""
    padded = np.pad(mask.astype(np.uint8), 1)
    reached = padded.copy()
    flood = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(reached, flood, (0, 0), 2, flags=4)
    return ((reached != 2)[1:-1, 1:-1]).astype(np.uint8)


def apply_visual_prompts(
    image: np.ndarray, mask: np.ndarray, prompt_types: list[str]
) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB image, ``[H, W]`` 0/1 uint8 mask -> the prompted image."""
    unknown = sorted(set(prompt_types) - set(PROMPT_TYPES))
    if unknown:
        raise ValueError(f"unknown visual prompt {unknown[0]!r} (have {', '.join(PROMPT_TYPES)})")
    prompted = image.copy()
    if "blur" in prompt_types:
        prompted = _keep(prompted, mask, cv2.GaussianBlur(prompted, BLUR_KERNEL, 0))
    if "gray" in prompt_types:
        gray = cv2.cvtColor(prompted, cv2.COLOR_BGR2GRAY)
        prompted = _keep(prompted, mask, np.stack([gray] * 3, axis=-1))
    if "black" in prompt_types:
        prompted = cv2.bitwise_and(prompted, prompted, mask=mask)
    marks = mask.any()
    if "circle" in prompt_types and marks:
        (row, col), height, width = _centre_and_extent(mask)
        prompted = cv2.ellipse(
            prompted, (col, row), (width // 2, height // 2), 0, 0, 360, MARK_COLOUR, 1
        )
    if "rectangle" in prompt_types and marks:
        (row, col), height, width = _centre_and_extent(mask)
        start = (col - width // 2, row - height // 2)
        end = (col + width // 2, row + height // 2)
        prompted = cv2.rectangle(prompted, start, end, MARK_COLOUR, 1)
    if "contour" in prompt_types:
        contours, _ = cv2.findContours(_fill_holes(mask), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        prompted = cv2.drawContours(prompted.copy(), contours, -1, MARK_COLOUR, 1)
    return prompted
