"""CaR's DenseCRF post-processing (pydensecrf2) of the final mask proposals."""

from __future__ import annotations

import numpy as np
from pydensecrf import densecrf
from pydensecrf.utils import unary_from_softmax

#: The original's BGR mean, subtracted before the bilateral term sees the image.
MEAN_BGR = (104.008, 116.669, 122.675)
ITERATIONS = 10
GAUSSIAN = {"sxy": 1, "compat": 3}
BILATERAL = {"sxy": 67, "srgb": 3, "compat": 4}


def reference_image(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8: BGR minus the mean, truncated and wrapped modulo 256, as the
    original's ``astype(uint8)`` of negative values produced."""
    shifted = rgb.astype(np.float32)[:, :, ::-1] - np.array(MEAN_BGR, np.float32)
    return (np.trunc(shifted).astype(np.int64) % 256).astype(np.uint8)


def crf_labels(rgb: np.ndarray, masks: np.ndarray, bg_factor: float) -> np.ndarray:
    """``[H, W]`` int64: 0 = background, j = proposal j - 1, from the CRF marginals of
    ``[(1 - max mask) ** bg_factor; masks]`` (``masks`` ``[k, H, W]`` in [0, 1])."""
    background = np.power(1 - np.max(masks, axis=0, keepdims=True), bg_factor)
    probabilities = np.concatenate([background, masks]).astype(np.float32)
    channels, height, width = probabilities.shape
    crf = densecrf.DenseCRF2D(width, height, channels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities)))
    crf.addPairwiseGaussian(**GAUSSIAN)
    crf.addPairwiseBilateral(rgbim=np.ascontiguousarray(reference_image(rgb)), **BILATERAL)
    marginals = np.array(crf.inference(ITERATIONS)).reshape(channels, height, width)
    return np.argmax(marginals, axis=0)
