"""``OVSegPredictor``: one RGB image and a vocabulary in, per-class scores out.

Both original paths resize with detectron2's ``ResizeShortestEdge`` (short side
``INPUT.MIN_SIZE_TEST``, long side at most ``INPUT.MAX_SIZE_TEST``, PIL bilinear):

- ``eval`` (the benchmark path): the geometric ensemble of MaskFormer and CLIP scores;
- ``demo`` (the original demo): CLIP scores only, the best region per class over its binary
  mask; a single-name vocabulary gets ``"others"`` appended, as in the original.

A pixel that no proposal covers (every class score exactly 0, which happens on the demo path
and when no proposal passes the mask threshold) is "no class" (65535).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import sem_seg_postprocess

from ovss_common.predictor_method import Stopwatch
from ovss_common.protocol import NO_CLASS
from ovss_ovseg.ovseg import ImageClassification, OVSeg, ProposalOutputs

PIPELINES = ("eval", "demo")
#: The class the demo appends to a one-name vocabulary.
OTHERS = "others"


@dataclass
class Prediction:
    """The result for one image.

    Attributes:
        label_map: ``[H0, W0]`` int64 indices into ``vocabulary`` (65535: no class).
        scores: ``[C, H0, W0]`` float32 scores at the input size.
        vocabulary: the effective vocabulary (the names as given, then ``"others"`` on the
            demo path for a single name).
        resized: ``[Hr, Wr, 3]`` the resized uint8 image the network saw.
        proposals: the proposal network's outputs.
        classification: how the proposals were classified.
        timings: seconds spent in ``preprocess``, ``model`` and ``postprocess``.
    """

    label_map: np.ndarray
    scores: torch.Tensor
    vocabulary: list[str]
    resized: np.ndarray
    proposals: ProposalOutputs
    classification: ImageClassification
    timings: dict[str, float] = field(default_factory=dict)


class OVSegPredictor:
    """Runs a loaded ``OVSeg`` on single images."""

    def __init__(self, model: OVSeg, cfg: CfgNode) -> None:
        self.model = model
        self.resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST, "choice"
        )

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, vocabulary: list[str], pipeline: str = "eval") -> Prediction:
        """Segment ``rgb`` (``[H, W, 3]`` uint8) with ``vocabulary``."""
        if pipeline not in PIPELINES:
            raise ValueError(f"pipeline {pipeline!r} is not one of {', '.join(PIPELINES)}")
        clock = Stopwatch()
        resized = self.resize.get_transform(rgb).apply_image(rgb)
        image = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        images = self.model.preprocess([image])
        clock.lap("preprocess")
        demo = pipeline == "demo"
        names = list(vocabulary)
        selectable = None
        if demo and len(names) == 1:
            names.append(OTHERS)
            selectable = 1
        proposals = self.model.propose(images)
        classification = self.model.classify(
            proposals, 0, image.to(self.model.device), names, demo=demo, selectable=selectable
        )
        combined = OVSeg.combine(classification)
        clock.lap("model")
        scores = sem_seg_postprocess(combined, images.image_sizes[0], *rgb.shape[:2]).float()
        labels = scores.argmax(dim=0)
        labels[(scores == 0).all(dim=0)] = NO_CLASS
        clock.lap("postprocess")
        return Prediction(
            label_map=labels.cpu().numpy().astype(np.int64),
            scores=scores.cpu(),
            vocabulary=names,
            resized=resized,
            proposals=proposals,
            classification=classification,
            timings=clock.timings,
        )
