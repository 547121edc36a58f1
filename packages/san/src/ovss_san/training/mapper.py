"""SAN's training data mapper: one (image, label) pair to an augmented, padded sample with
per-class binary masks, as the original ``MaskFormerSemanticDatasetMapper(is_train=True)``
makes it.

The geometric augmentations are detectron2's own (``ResizeShortestEdge``,
``RandomCrop_CategoryAreaConstraint``, ``RandomFlip``), fed the label as float64 like the
original (it reads the label file and converts it to double), so the label is resized by
torch's nearest interpolation and the image by Pillow's bilinear resize. They draw from
numpy's global RNG. The SSD colour augmentation is ours (:class:`ColorAugSSD`); it draws
from Python's ``random`` module, as the original does.

The colour augmentation's HSV round trip ports OpenCV 4.x's 8-bit ``cvtColor``
(``COLOR_BGR2HSV`` / ``COLOR_HSV2BGR``, H in [0, 180)). BGR→HSV is fixed-point integer
arithmetic and exact everywhere. HSV→BGR works in float32 and is what OpenCV's x86-64 AVX2
code computes: in each image row, the first ``32·⌊W/32⌋`` pixels go through its vector
path, which truncates to uint8, and the remaining pixels through its scalar path, which
rounds; both use fused multiply-adds for ``1 − s·h``. Checked against opencv-python
4.12.0 on all 2^24 uint8 triples, for row widths that exercise both paths.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from torch.nn import functional as F

_FLIPS = {"horizontal": (True, False), "vertical": (False, True)}
# OpenCV's 8-bit BGR→HSV: 12-bit fixed-point reciprocals, rounded as cvRound does (half to even).
_HSV_SHIFT = 12
_DIVISORS = np.arange(1, 256, dtype=np.float64)
_S_DIV = np.concatenate([[0], np.rint((255 << _HSV_SHIFT) / _DIVISORS)]).astype(np.int32)
_H_DIV = np.concatenate([[0], np.rint((180 << _HSV_SHIFT) / (6 * _DIVISORS))]).astype(np.int32)
# HSV→BGR: which of (v, p, q, t) becomes B, G, R in each of the six hue sectors.
_SECTOR_TABLE = np.array([[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]])
_SIMD_PIXELS = 32  # pixels per iteration of OpenCV's AVX2 HSV→BGR loop (4 × 8 float lanes)


@dataclass(frozen=True)
class MapperConfig:
    """What the mapper does, from the ``INPUT.*`` keys of a SAN config."""

    min_size_train: tuple[int, ...]
    """``INPUT.MIN_SIZE_TRAIN``: short-edge lengths (choices, or a [min, max] range)."""
    min_size_train_sampling: str
    """``INPUT.MIN_SIZE_TRAIN_SAMPLING``: ``"choice"`` or ``"range"``."""
    max_size_train: int
    """``INPUT.MAX_SIZE_TRAIN``: the longest edge after resizing."""
    crop_enabled: bool
    """``INPUT.CROP.ENABLED``: apply the category-area-constrained random crop."""
    crop_type: str
    """``INPUT.CROP.TYPE``: ``"absolute"``, ``"absolute_range"``, ``"relative"`` or
    ``"relative_range"``."""
    crop_size: tuple[int | float, int | float]
    """``INPUT.CROP.SIZE``: (height, width), or a range, in the units of ``crop_type``."""
    single_category_max_area: float
    """``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``: largest area fraction of one class in a crop
    (1.0 disables the constraint)."""
    color_aug_ssd: bool
    """``INPUT.COLOR_AUG_SSD``: apply :class:`ColorAugSSD`."""
    image_format: str
    """``INPUT.FORMAT``: channel order of the output image, ``"RGB"`` or ``"BGR"``."""
    random_flip: str
    """``INPUT.RANDOM_FLIP``: ``"horizontal"``, ``"vertical"`` or ``"none"`` (p = 0.5). The
    original ignores this key and always flips horizontally, which is the official value."""
    size_divisibility: int
    """``INPUT.SIZE_DIVISIBILITY``: if > 0, the padded side length of the output (the original
    pads bottom/right to exactly this size; a larger image is trimmed to it)."""
    ignore_label: int
    """``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``: the label value that is no class (the original
    pads and drops the dataset metadata's ``ignore_label``, 255 for every SAN dataset)."""

    def __post_init__(self) -> None:
        if self.min_size_train_sampling not in ("choice", "range"):
            raise ValueError(f"unknown MIN_SIZE_TRAIN_SAMPLING {self.min_size_train_sampling!r}")
        if self.image_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, not {self.image_format!r}")
        if self.random_flip not in (*_FLIPS, "none"):
            raise ValueError(f"unknown INPUT.RANDOM_FLIP {self.random_flip!r}")

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> MapperConfig:
        """Read the mapper's keys from a SAN config."""
        inp = cfg.INPUT
        return cls(
            min_size_train=tuple(inp.MIN_SIZE_TRAIN),
            min_size_train_sampling=inp.MIN_SIZE_TRAIN_SAMPLING,
            max_size_train=inp.MAX_SIZE_TRAIN,
            crop_enabled=inp.CROP.ENABLED,
            crop_type=inp.CROP.TYPE,
            crop_size=tuple(inp.CROP.SIZE),
            single_category_max_area=inp.CROP.SINGLE_CATEGORY_MAX_AREA,
            color_aug_ssd=inp.COLOR_AUG_SSD,
            image_format=inp.FORMAT,
            random_flip=inp.RANDOM_FLIP,
            size_divisibility=inp.SIZE_DIVISIBILITY,
            ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        )


@dataclass
class TrainSample:
    """One mapped training sample."""

    image: torch.Tensor
    """``[3, H, W]`` uint8, 0..255, in ``image_format`` order, padded with 128."""
    sem_seg: torch.Tensor
    """``[H, W]`` int64 labels, padded with ``ignore_label``."""
    gt_classes: torch.Tensor
    """``[K]`` int64: the sorted classes present, ``ignore_label`` excluded."""
    gt_masks: torch.Tensor
    """``[K, H, W]`` bool: one mask per entry of ``gt_classes``."""


def bgr_to_hsv(image: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``COLOR_BGR2HSV``: ``[H, W, 3]`` uint8 BGR to uint8 HSV, H in [0, 180)."""
    bgr = image.astype(np.int32)
    b, g, r = bgr[..., 0], bgr[..., 1], bgr[..., 2]
    value = bgr.max(-1)
    diff = value - bgr.min(-1)
    half = 1 << (_HSV_SHIFT - 1)
    saturation = (diff * _S_DIV[value] + half) >> _HSV_SHIFT
    hue = np.where(value == r, g - b, np.where(value == g, b - r + 2 * diff, r - g + 4 * diff))
    hue = (hue * _H_DIV[diff] + half) >> _HSV_SHIFT
    hue = np.where(hue < 0, hue + 180, hue)
    return np.stack([hue, saturation, value], -1).astype(np.uint8)


def _one_minus_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 ``1 − a·b`` rounded once, as a fused multiply-add does (the float64 product of
    two float32 values is exact; the single float32 rounding was checked on every input the
    8-bit conversion can produce)."""
    return (1.0 - a.astype(np.float64) * b.astype(np.float64)).astype(np.float32)


def hsv_to_bgr(image: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``COLOR_HSV2BGR`` (x86-64, AVX2): ``[H, W, 3]`` uint8 HSV to uint8 BGR."""
    f32 = np.float32
    hsv = image.astype(f32)
    hue = hsv[..., 0] * (f32(6) / f32(180))
    saturation = hsv[..., 1] * (f32(1) / f32(255))
    value = hsv[..., 2] * (f32(1) / f32(255))
    whole = np.trunc(hue)
    frac = hue - whole
    sector = (whole - np.trunc(whole * (f32(1) / f32(6))) * f32(6)).astype(np.int64)
    candidates = np.stack(
        [
            value,
            value * (f32(1) - saturation),
            value * _one_minus_product(saturation, frac),
            value * _one_minus_product(saturation, f32(1) - frac),
        ],
        -1,
    )
    bgr = np.take_along_axis(candidates, _SECTOR_TABLE[sector], -1) * f32(255)
    vector = image.shape[1] // _SIMD_PIXELS * _SIMD_PIXELS
    bgr[:, :vector] = np.trunc(bgr[:, :vector])
    bgr[:, vector:] = np.rint(bgr[:, vector:])
    return np.clip(bgr, 0, 255).astype(np.uint8)


class ColorAugSSD(T.Transform):
    """SSD's photometric distortion on a ``[H, W, 3]`` uint8 RGB image (labels pass unchanged):
    brightness ±32, then contrast ×[0.5, 1.5] either first or last around saturation
    ×[0.5, 1.5] and hue ±18 (in OpenCV's 180-step hue), each step applied with probability
    0.5. Draws from Python's ``random`` at application time. It works on the BGR image, as the
    original does whatever ``INPUT.FORMAT`` is."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = self._brightness(img[:, :, ::-1])
        if random.randrange(2):
            img = self._hue(self._saturation(self._contrast(img)))
        else:
            img = self._contrast(self._hue(self._saturation(img)))
        return np.ascontiguousarray(img[:, :, ::-1])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    @staticmethod
    def _affine(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        """``alpha·img + beta`` in float32, clipped to [0, 255] and truncated to uint8."""
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _brightness(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            return self._affine(img, beta=random.uniform(-32, 32))
        return img

    def _contrast(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            return self._affine(img, alpha=random.uniform(0.5, 1.5))
        return img

    def _saturation(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            hsv = bgr_to_hsv(img)
            hsv[:, :, 1] = self._affine(hsv[:, :, 1], alpha=random.uniform(0.5, 1.5))
            return hsv_to_bgr(hsv)
        return img

    def _hue(self, img: np.ndarray) -> np.ndarray:
        if random.randrange(2):
            hsv = bgr_to_hsv(img)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + random.randint(-18, 18)) % 180
            return hsv_to_bgr(hsv)
        return img


class SemanticTrainMapper:
    """SAN's semantic training mapper: resize, crop, colour, flip, pad, per-class masks."""

    def __init__(self, config: MapperConfig) -> None:
        self.config = config
        augmentations: list[T.Augmentation | T.Transform] = [
            T.ResizeShortestEdge(
                config.min_size_train, config.max_size_train, config.min_size_train_sampling
            )
        ]
        if config.crop_enabled:
            augmentations.append(
                T.RandomCrop_CategoryAreaConstraint(
                    config.crop_type,
                    config.crop_size,
                    config.single_category_max_area,
                    config.ignore_label,
                )
            )
        if config.color_aug_ssd:
            augmentations.append(ColorAugSSD())
        if config.random_flip != "none":
            horizontal, vertical = _FLIPS[config.random_flip]
            augmentations.append(T.RandomFlip(horizontal=horizontal, vertical=vertical))
        self.augmentations = T.AugmentationList(augmentations)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> TrainSample:
        """image [H, W, 3] uint8 RGB, label [H, W] uint8/int training ids (ignore = config.ignore_label)"""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
        if label.shape != image.shape[:2]:
            raise ValueError(f"label shape {label.shape} differs from image {image.shape[:2]}")
        if not np.issubdtype(label.dtype, np.integer) or (label.size and label.min() < 0):
            raise ValueError(f"label must hold non-negative integer ids, got {label.dtype}")
        aug_input = T.AugInput(image, sem_seg=label.astype(np.float64))
        self.augmentations(aug_input)
        out_image = (
            aug_input.image if self.config.image_format == "RGB" else aug_input.image[..., ::-1]
        )
        pixels = torch.from_numpy(np.ascontiguousarray(out_image.transpose(2, 0, 1)))
        sem_seg = torch.from_numpy(aug_input.sem_seg.astype(np.int64))
        side = self.config.size_divisibility
        if side > 0:
            padding = [0, side - pixels.shape[2], 0, side - pixels.shape[1]]
            pixels = F.pad(pixels, padding, value=128).contiguous()
            sem_seg = F.pad(sem_seg, padding, value=self.config.ignore_label).contiguous()
        classes = sem_seg.unique()
        classes = classes[classes != self.config.ignore_label]
        return TrainSample(
            image=pixels,
            sem_seg=sem_seg,
            gt_classes=classes,
            gt_masks=sem_seg[None] == classes[:, None, None],
        )
