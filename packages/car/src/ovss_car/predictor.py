"""``CarPredictor``: one RGB image and a vocabulary in, CaR's label map and scores out.

The image pipeline of the original's evaluation (google-research/google-research at
8d8a4f1b27753c7580d16261a1468b3d6ad2c3d3, ``clip_as_rnn/utils/inference_pipeline.py`` and
``clip_as_rnn/evaluate.py``), used alike by the worker, the bench and ``inspect``:

1. the VOC config's longer class names ("bird" -> "bird avian") for the text towers;
2. a stuff pass over the ``stuff`` names first, with the thing names as CAM background
   words and the config's ``stuff_*`` settings, when any stuff name is given;
3. the thing pass over the other names;
4. optionally, SAM refinement of every pass's masks;
5. the masks painted in ascending score, stuff first (``assign_labels``); the scores of a
   class are its final mask times its score.

Label indices are positions in the vocabulary as given; CaR adds no class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from clip.model import CLIP
from PIL import Image

from ovss_car.car import CaR, PassResult, assign_labels
from ovss_car.clip_model import load_clip, random_clip
from ovss_car.config import CarConfig
from ovss_car.sam import SamRefiner, refine_masks
from ovss_common.class_lists import class_file
from ovss_common.clip_geometry import OPENAI_CLIP_GEOMETRIES
from ovss_common.predictor_method import Stopwatch
from ovss_common.protocol import NO_CLASS
from ovss_common.torch_runtime import move


def voc_names(names: Sequence[str]) -> list[str]:
    """CaR's VOC config swaps a plain VOC class name for its longer CaR name ("bird" ->
    "bird avian"); other names are kept."""
    voc = class_file("voc-21")
    longer = dict(zip(voc["names"], voc["methods"]["car"], strict=True))
    return [longer.get(name) or name for name in names]


def random_clips(names: Iterable[str]) -> list[CLIP]:
    """The CLIPs ``names`` (official names only) with OpenAI's random initialisation;
    ValueError naming the first other name."""
    names = list(names)
    unknown = [name for name in names if name not in OPENAI_CLIP_GEOMETRIES]
    if unknown:
        raise ValueError(
            f"random weights need official CLIP names ({', '.join(OPENAI_CLIP_GEOMETRIES)}); "
            f"the config names {unknown[0]!r}"
        )
    return [random_clip(name) for name in names]


def build_car(config: CarConfig, checkpoints: Sequence[str] | None, device: Any, dtype: Any) -> CaR:
    """CaR with the config's two CLIPs: loaded from ``checkpoints`` (CAM, classifier), or
    randomly initialised when it is None; moved to ``device`` and ``dtype``.

    Raises:
        CheckpointError: a checkpoint that is not an OpenAI-format CLIP.
        ValueError: random weights for a config that names no official CLIP.
    """
    names = (config.cam_checkpoint, config.semantic_checkpoint)
    clips = random_clips(names) if checkpoints is None else [load_clip(p) for p in checkpoints]
    cam_clip, sem_clip = (move(clip, device, dtype) for clip in clips)
    return CaR(cam_clip, sem_clip)


@dataclass
class Prediction:
    """The result for one image.

    Attributes:
        label_map: ``[H, W]`` int64 positions in ``vocabulary``; 65535 where CaR assigns
            nothing.
        vocabulary: the effective vocabulary (the names as given: CaR adds none).
        scores: ``[C, H, W]`` float32, each class's final mask times its score (0 for a
            class that was not kept), or None when not kept.
        passes: ``(result, vocabulary positions)`` of each pass, stuff first.
        pass_names: ``"stuff"`` or ``"things"``, one per pass.
        timings: seconds in ``model`` (the passes), ``sam`` (when refining) and
            ``postprocess``.
        details: ``steps`` (and ``stuff_steps``) per pass, ``sam_masks``, and the names
            ``kept`` with a positive score.
    """

    label_map: np.ndarray
    vocabulary: list[str]
    scores: np.ndarray | None
    passes: list[tuple[PassResult, list[int]]]
    pass_names: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class CarPredictor:
    """Runs a built ``CaR`` on single images with a config's settings.

    Args:
        model: the two CLIPs and the recurrence.
        config: the CaR config (thresholds, prompts, templates, stuff-pass settings).
        refiner: SAM refinement of the masks, or None.
        rename_voc: whether the VOC config's longer names replace plain VOC names (the
            harmonised protocol turns it off).
    """

    def __init__(
        self,
        model: CaR,
        config: CarConfig,
        refiner: SamRefiner | None = None,
        rename_voc: bool = True,
    ) -> None:
        self.model = model
        self.config = config
        self.refiner = refiner
        self.rename_voc = rename_voc

    @property
    def renames_voc(self) -> bool:
        """Whether plain VOC names become CaR's longer ones (the VOC config, unless off)."""
        return self.rename_voc and self.config.dataset == "voc"

    def text_names(self, names: Sequence[str]) -> list[str]:
        """The names the text towers see for ``names``."""
        return voc_names(names) if self.renames_voc else list(names)

    def predict(
        self,
        rgb: np.ndarray,
        vocabulary: Sequence[str],
        stuff: Iterable[str] = (),
        keep_scores: bool = False,
    ) -> Prediction:
        """Segment ``rgb`` (``[H, W, 3]`` uint8) with ``vocabulary``; the names also in
        ``stuff`` get the stuff pass."""
        clock = Stopwatch()
        picture = Image.fromarray(rgb)
        sent = list(vocabulary)
        names = self.text_names(sent)
        stuff = set(stuff)
        things = [i for i, name in enumerate(sent) if name not in stuff]
        stuffs = [i for i, name in enumerate(sent) if name in stuff]
        passes: list[tuple[PassResult, list[int]]] = []
        details: dict[str, Any] = {}
        thing_names = [names[i] for i in things]
        if stuffs:
            settings = self.config.pass_settings(stuff=True, background=thing_names)
            result = self.model.run(picture, [names[i] for i in stuffs], settings)
            passes.append((result, stuffs))
            details["stuff_steps"] = len(result.steps)
        if things:
            result = self.model.run(picture, thing_names, self.config.pass_settings())
            passes.append((result, things))
            details["steps"] = len(result.steps)
        clock.lap("model")
        if self.refiner is not None:
            sam_masks = self.refiner.sam_masks(rgb)
            for result, _ in passes:
                result.masks = refine_masks(result.masks, sam_masks, self.refiner.settings)
            details["sam_masks"] = len(sam_masks)
            clock.lap("sam")
        labels = assign_labels(passes, rgb.shape[:2], NO_CLASS)
        scores = None
        if keep_scores:
            scores = np.zeros((len(sent), *rgb.shape[:2]), np.float32)
            for result, ids in passes:
                for position, index in enumerate(ids):
                    scores[index] = result.masks[position] * result.scores[position]
        details["kept"] = [
            sent[i]
            for result, ids in passes
            for i, score in zip(ids, result.scores, strict=True)
            if score > 0
        ]
        clock.lap("postprocess")
        names_of_passes = (["stuff"] if stuffs else []) + (["things"] if things else [])
        return Prediction(labels, sent, scores, passes, names_of_passes, clock.timings, details)
