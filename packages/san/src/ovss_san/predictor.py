"""``SanPredictor``: one RGB image and a vocabulary in, per-class scores out.

It hides SAN's two original pre-processing paths:

- ``eval`` (the benchmark path): detectron2's ``ResizeShortestEdge`` (short side
  ``INPUT.MIN_SIZE_TEST``, long side at most ``INPUT.MAX_SIZE_TEST``, PIL bilinear, sizes
  rounded), names used as given;
- ``demo`` (the original demo): PIL's default bicubic resize of the short side to 640 with
  the long side truncated and no maximum, names lower-cased for the text tower, and an
  optional COCO vocabulary expansion whose extra classes are reported as one "other" class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from PIL import Image

from ovss_common.predictor_method import Stopwatch
from ovss_san.san import SAN, SanOutputs

PIPELINES = ("eval", "demo")
#: The demo's fixed short side.
DEMO_SHORT_SIDE = 640
#: Classes whose scores are combined at once (bounds memory for large vocabularies).
CLASS_CHUNK = 64
#: The name of the class that collects expansion classes on the demo path.
OTHER = "other"


@dataclass
class Prediction:
    """The result for one image.

    Attributes:
        label_map: ``[H0, W0]`` int64 argmax over the effective vocabulary.
        scores: ``[C, H0, W0]`` float32 per-class scores at the input size (C = len(vocabulary)),
            or None when not kept.
        vocabulary: the effective vocabulary: the names as given, then ``"other"`` when the
            demo expansion is on.
        resized: ``[Hr, Wr, 3]`` the resized uint8 image the network saw.
        outputs: the network's outputs (intermediates), for inspection and tests.
        timings: seconds spent in ``preprocess``, ``model`` and ``postprocess``.
    """

    label_map: np.ndarray
    scores: torch.Tensor | None
    vocabulary: list[str]
    resized: np.ndarray
    outputs: SanOutputs
    timings: dict[str, float] = field(default_factory=dict)


def demo_resize(rgb: np.ndarray, short_side: int = DEMO_SHORT_SIDE) -> np.ndarray:
    """The demo's resize: short side to ``short_side``, long side truncated, PIL bicubic."""
    h, w = rgb.shape[:2]
    size = (short_side, int(h * short_side / w)) if w < h else (int(w * short_side / h), short_side)
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))


def expansion_names(
    vocabulary: list[str], expansion: str, coco_names: list[str], coco_stuff: list[str]
) -> list[str]:
    """Names the demo appends: ``"none"``, all COCO-Stuff names (``"COCO-all"``) or its
    stuff names (``"COCO-stuff"``), skipping names already in the vocabulary."""
    if expansion == "none":
        return []
    pool = {"COCO-all": coco_names, "COCO-stuff": coco_stuff}.get(expansion)
    if pool is None:
        raise ValueError(
            f"vocabulary expansion {expansion!r} is not one of none, COCO-all, COCO-stuff"
        )
    present = set(vocabulary)
    return [name for name in pool if name not in present]


class SanPredictor:
    """Runs a loaded ``SAN`` on single images.

    Args:
        model: the network, in eval mode, on its device.
        cfg: its config (test sizes).
    """

    def __init__(self, model: SAN, cfg: CfgNode) -> None:
        self.model = model
        self.eval_resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST, "choice"
        )

    def resize(self, rgb: np.ndarray, pipeline: str) -> np.ndarray:
        """``[H, W, 3]`` uint8 -> the resized uint8 image of ``pipeline``."""
        if pipeline == "eval":
            return self.eval_resize.get_transform(rgb).apply_image(rgb)
        if pipeline == "demo":
            return demo_resize(rgb)
        raise ValueError(f"pipeline {pipeline!r} is not one of {', '.join(PIPELINES)}")

    @torch.no_grad()
    def predict(
        self,
        rgb: np.ndarray,
        vocabulary: list[str],
        pipeline: str = "eval",
        extra_names: list[str] | None = None,
        keep_scores: bool = True,
    ) -> Prediction:
        """Segment ``rgb`` (``[H, W, 3]`` uint8) with ``vocabulary``.

        ``extra_names`` (demo expansion) are scored with the vocabulary; a pixel won by one
        of them goes to a final ``"other"`` class whose score is their maximum. Scores are
        combined ``CLASS_CHUNK`` classes at a time, so that ``keep_scores=False`` never holds
        ``[C, H, W]`` for large vocabularies.
        """
        clock = Stopwatch()
        resized = self.resize(rgb, pipeline)
        names = [name.lower() for name in vocabulary] if pipeline == "demo" else list(vocabulary)
        names += list(extra_names or [])
        image = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        images = self.model.preprocess([image])
        clock.lap("preprocess")
        outputs = self.model.run(images, names)
        clock.lap("model")
        count = len(vocabulary)
        best = labels = other = None
        kept = []
        for first, chunk in self.model.iter_scores(outputs, 0, rgb.shape[:2], CLASS_CHUNK):
            value, index = chunk.max(dim=0)
            if best is None:
                best, labels = value, index + first
            else:
                better = value > best
                best = torch.where(better, value, best)
                labels = torch.where(better, index + first, labels)
            if keep_scores:
                kept.append(chunk[: max(0, count - first)])
                if first + chunk.shape[0] > count:
                    extra = chunk[max(0, count - first) :].amax(dim=0, keepdim=True)
                    other = extra if other is None else torch.maximum(other, extra)
        effective = list(vocabulary)
        if extra_names:
            labels = labels.clamp(max=count)
            effective.append(OTHER)
        scores = None
        if keep_scores:
            scores = torch.cat(kept + ([other] if other is not None else [])).cpu()
        clock.lap("postprocess")
        return Prediction(
            label_map=labels.cpu().numpy().astype(np.int64),
            scores=scores,
            vocabulary=effective,
            resized=resized,
            outputs=outputs,
            timings=clock.timings,
        )
