"""SAN's training mapper: the golden batch of the original mapper, padding, flips, empty labels,
OpenCV's 8-bit HSV conversions and input errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import CONFIG, GOLDEN
from detectron2.utils.env import seed_all_rng

from ovss_san.config import get_config
from ovss_san.training.mapper import MapperConfig, SemanticTrainMapper, bgr_to_hsv, hsv_to_bgr

TRAIN = GOLDEN / "train"
SMALL = MapperConfig(
    min_size_train=(40,),
    min_size_train_sampling="choice",
    max_size_train=1000,
    crop_enabled=False,
    crop_type="absolute",
    crop_size=(30, 45),
    single_category_max_area=1.0,
    color_aug_ssd=False,
    image_format="RGB",
    random_flip="horizontal",
    size_divisibility=0,
    ignore_label=255,
)


def _pair(h: int = 40, w: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 4, (h, w), dtype=np.uint8)
    label[: h // 4] = 255
    return image, label


def _map(config: MapperConfig, image: np.ndarray, label: np.ndarray, seed: int):
    seed_all_rng(seed)
    return SemanticTrainMapper(config)(image, label)


def test_golden_batch_is_reproduced_exactly():
    """The original mapper's two samples after ``seed_all_rng(3)`` (``train/batch.npz``), with
    ``INPUT.CROP.SIZE (320, 320)`` and ``INPUT.SIZE_DIVISIBILITY 320``: image, sem_seg,
    gt_classes and gt_masks are equal, element for element. The colour augmentation ran
    brightness (sample 1), saturation (sample 0), hue (both) and contrast (sample 1); its HSV
    round trip is the port of OpenCV's 8-bit conversions tested below."""
    cfg = get_config(CONFIG, ["INPUT.CROP.SIZE", "(320, 320)", "INPUT.SIZE_DIVISIBILITY", "320"])
    mapper = SemanticTrainMapper(MapperConfig.from_cfg(cfg))
    batch = np.load(TRAIN / "batch.npz")
    images = [
        np.load(GOLDEN / "cases" / f"{n}.npz")["image"] for n in ("voc_voc20", "chelsea_custom3")
    ]
    seed_all_rng(3)
    for i, image in enumerate(images):
        sample = mapper(image, batch[f"raw/{i}/label"])
        assert sample.image.dtype == torch.uint8 and sample.sem_seg.dtype == torch.int64
        assert sample.gt_classes.dtype == torch.int64 and sample.gt_masks.dtype == torch.bool
        for key in ("image", "sem_seg", "gt_classes", "gt_masks"):
            np.testing.assert_array_equal(
                getattr(sample, key).numpy(), batch[f"batch/{i}/{key}"], key
            )


def test_pads_to_the_size_with_128_and_ignore():
    config = replace(SMALL, crop_enabled=True, size_divisibility=64)
    sample = _map(config, *_pair(), seed=0)
    assert sample.image.shape == (3, 64, 64) and sample.sem_seg.shape == (64, 64)
    assert (sample.image[:, 30:] == 128).all() and (sample.image[:, :, 45:] == 128).all()
    assert (sample.sem_seg[30:] == 255).all() and (sample.sem_seg[:, 45:] == 255).all()
    assert sample.gt_masks.shape == (len(sample.gt_classes), 64, 64)
    assert not sample.gt_masks[:, 30:].any() and not sample.gt_masks[:, :, 45:].any()
    assert (sample.gt_masks.sum(0) == (sample.sem_seg != 255)).all()
    # Like the original's negative padding, a larger image is trimmed to the size.
    trimmed = _map(replace(config, size_divisibility=16), *_pair(), seed=0)
    assert (trimmed.image == sample.image[:, :16, :16]).all()


@pytest.mark.parametrize(("flip", "axis"), [("horizontal", 1), ("vertical", 0)])
def test_flip_mirrors_image_and_label_together(flip, axis):
    image, label = _pair()
    flipped = set()
    for seed in range(8):
        plain = _map(replace(SMALL, random_flip="none"), image, label, seed)
        sample = _map(replace(SMALL, random_flip=flip), image, label, seed)
        was_flipped = not (sample.sem_seg == plain.sem_seg).all()
        flipped.add(was_flipped)
        if was_flipped:
            assert (sample.image == plain.image.flip(axis + 1)).all()
            assert (sample.sem_seg == plain.sem_seg.flip(axis)).all()
        else:
            assert (sample.image == plain.image).all()
    assert flipped == {True, False}


def test_all_ignore_label_gives_no_masks():
    image, label = _pair()
    sample = _map(SMALL, image, np.full_like(label, 255), seed=0)
    assert sample.gt_classes.shape == (0,) and sample.gt_masks.shape == (0, 40, 50)
    assert sample.gt_classes.dtype == torch.int64 and sample.gt_masks.dtype == torch.bool


def test_bgr_format_reverses_the_output_channels():
    config = replace(SMALL, color_aug_ssd=True)
    rgb = _map(config, *_pair(), seed=5)
    bgr = _map(replace(config, image_format="BGR"), *_pair(), seed=5)
    assert (bgr.image == rgb.image.flip(0)).all() and (bgr.sem_seg == rgb.sem_seg).all()


def test_bgr_to_hsv_matches_opencv():
    """Values from opencv-python 4.12 ``cvtColor(COLOR_BGR2HSV)``."""
    bgr = [
        (0, 0, 255),
        (0, 255, 0),
        (255, 0, 0),
        (10, 20, 30),
        (200, 3, 90),
        (7, 7, 7),
        (255, 254, 0),
        (1, 0, 1),
    ]
    hsv = [
        (0, 255, 255),
        (60, 255, 255),
        (120, 255, 255),
        (15, 170, 30),
        (133, 251, 200),
        (0, 0, 7),
        (90, 255, 255),
        (150, 255, 1),
    ]
    np.testing.assert_array_equal(bgr_to_hsv(np.array([bgr], np.uint8))[0], hsv)


def test_hsv_to_bgr_matches_opencv_vector_and_scalar_paths():
    """Values from opencv-python 4.12 ``cvtColor(COLOR_HSV2BGR)`` on x86-64 (AVX2), on rows of
    33 pixels: the first 32 take its vector path (truncation), the last its scalar path
    (rounding); both fuse ``1 − s·h`` (e.g. (1, 90, 85) gives G 56, not 55)."""
    cases = {
        (0, 1, 1): ((0, 0, 1), (1, 1, 1)),
        (1, 90, 85): ((55, 56, 85), (55, 56, 85)),
        (1, 153, 25): ((10, 10, 25), (10, 10, 25)),
        (1, 153, 125): ((50, 52, 125), (50, 52, 125)),
        (97, 200, 31): ((31, 25, 6), (31, 25, 7)),
        (179, 255, 255): ((8, 0, 255), (8, 0, 255)),
        (30, 0, 77): ((77, 77, 77), (77, 77, 77)),
        (150, 17, 254): ((254, 237, 254), (254, 237, 254)),
    }
    rows = np.repeat(np.array(list(cases), np.uint8)[:, None], 33, 1)
    out = hsv_to_bgr(rows)
    for row, (vector, scalar) in zip(out, cases.values(), strict=True):
        np.testing.assert_array_equal(row[:32], np.broadcast_to(vector, (32, 3)))
        np.testing.assert_array_equal(row[32], scalar)


@pytest.mark.parametrize(
    ("image", "label", "message"),
    [
        (np.zeros((4, 5), np.uint8), np.zeros((4, 5), np.uint8), "image must be"),
        (np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), np.uint8), "image must be"),
        (np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.uint8), "label shape"),
        (np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), np.float64), "non-negative integer"),
        (np.zeros((4, 5, 3), np.uint8), np.full((4, 5), -1), "non-negative integer"),
    ],
)
def test_bad_inputs_are_one_line_errors(image, label, message):
    with pytest.raises(ValueError, match=message) as error:
        SemanticTrainMapper(SMALL)(image, label)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "change",
    [{"image_format": "YUV"}, {"random_flip": "diagonal"}, {"min_size_train_sampling": "any"}],
)
def test_bad_config_is_an_error(change):
    with pytest.raises(ValueError):
        replace(SMALL, **change)
