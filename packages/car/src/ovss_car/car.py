"""CLIP as RNN: the recurrent mask-proposal / classification loop, DenseCRF, label assignment.

One *pass* segments an image with a vocabulary:

1. every step, CLIPCAM proposes one mask per remaining text (Grad-CAM + CLIP-ES);
2. each mask becomes a visual prompt on the image; the classifier scores every prompted image
   against every remaining class (double softmax over templates); a class stays when the
   score of its own prompted image exceeds the confidence threshold (else only the best);
3. the loop stops when a step keeps as many classes as the step before (so at least two steps
   run); the last step's masks go through DenseCRF with a background channel.

From step 2 on, the CAM texts are the templated ``"a clean origami {name}."`` strings, as in
the original. Datasets with stuff classes run a second pass for them, with the thing
vocabulary as CAM background words; stuff is painted first, then things, in ascending score.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from clip.model import CLIP
from PIL import Image

from ovss_car.cam import CamOutputs, ClipCam
from ovss_car.classifier import combine_templates, preprocess_images, template_probabilities
from ovss_car.crf import crf_labels
from ovss_car.text import class_embeddings, prompt_embeddings
from ovss_car.visual_prompts import apply_visual_prompts

#: Template of the CAM's background words and of the texts carried between steps.
CAM_TEXT_TEMPLATE = "a clean origami {}."


@dataclass(frozen=True)
class PassSettings:
    """The knobs of one pass (``car.*`` config values)."""

    confidence_threshold: float
    mask_threshold: float
    clipes_threshold: float
    visual_prompt_type: tuple[str, ...]
    bg_factor: float
    background: tuple[str, ...] | None
    semantic_templates: tuple[str, ...] | None


@dataclass
class Step:
    """One recurrent step.

    Attributes:
        cam_texts: texts given to CLIPCAM.
        cam: its outputs (masks ``[n, H, W]``).
        prompted: the prompted images (``[H, W, 3]`` uint8).
        scores: ``[n, n]`` classifier matrix S (prompted image i vs class j).
        kept: indices kept for the next step.
        all_scores: ``[n]`` S's diagonal at the kept indices, 0 elsewhere.
    """

    cam_texts: list[str]
    cam: CamOutputs
    prompted: list[np.ndarray]
    scores: torch.Tensor
    kept: list[int]
    all_scores: torch.Tensor


@dataclass
class PassResult:
    """A pass over one vocabulary.

    Attributes:
        masks: ``[N, H, W]`` 0/1 float masks per vocabulary position (zeros when dropped).
        scores: ``[N]`` final scores (0 when dropped).
        steps: every recurrent step.
        crf_label: ``[H, W]`` CRF argmax (0 = background, j = kept proposal j - 1).
        timings: seconds in ``cam``, ``prompts``, ``classifier`` and ``crf``.
    """

    masks: np.ndarray
    scores: np.ndarray
    steps: list[Step] = field(default_factory=list)
    crf_label: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


class CaR:
    """The two CLIPs and the recurrence.

    Args:
        cam_clip: the CLIP whose Grad-CAM proposes masks (ViT-B/16 officially).
        sem_clip: the CLIP that classifies prompted images (ViT-L/14 officially).
    """

    def __init__(self, cam_clip: CLIP, sem_clip: CLIP) -> None:
        self.cam_clip = cam_clip
        self.sem_clip = sem_clip
        self._background: dict[tuple[str, ...], torch.Tensor] = {}
        self._prompts: dict[str, torch.Tensor] = {}

    def clear_cache(self) -> None:
        """Forget the cached text embeddings (classifier prompts and CAM background words)."""
        self._prompts.clear()
        self._background.clear()

    def prompt_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """``[N, D]`` normalised classifier text embeddings, each prompt encoded once per
        model (the original re-encodes every text on every step)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompts]
        if missing:
            self._prompts.update(
                zip(missing, prompt_embeddings(self.sem_clip, missing), strict=True)
            )
        return torch.stack([self._prompts[p] for p in prompts])

    def background_embeddings(self, words: tuple[str, ...] | None) -> torch.Tensor | None:
        """``[n_bg, D]`` CAM background text embeddings (cached per word list)."""
        if not words:
            return None
        if words not in self._background:
            self._background[words] = class_embeddings(
                self.cam_clip, list(words), (CAM_TEXT_TEMPLATE,)
            )
        return self._background[words]

    def _classify(
        self, prompted: list[np.ndarray], semantic_texts: list[list[str]]
    ) -> torch.Tensor:
        size = self.sem_clip.visual.input_resolution
        inputs = preprocess_images(prompted, size).to(self.sem_clip.visual.conv1.weight.device)
        probabilities = template_probabilities(
            self.sem_clip, inputs, semantic_texts, self.prompt_embeddings
        )
        return combine_templates(probabilities) if len(semantic_texts) > 1 else probabilities[0]

    @torch.no_grad()
    def run(self, image: Image.Image, names: list[str], settings: PassSettings) -> PassResult:
        """One pass of CaR over ``names`` on ``image`` (RGB)."""
        rgb = np.array(image)
        cam = ClipCam(
            self.cam_clip,
            settings.clipes_threshold,
            self.background_embeddings(settings.background),
        )
        initial = [CAM_TEXT_TEMPLATE.format(name) for name in names]
        cam_texts, carried = list(names), list(initial)
        templates = settings.semantic_templates
        semantic_texts = (
            [[t.format(name) for name in names] for t in templates]
            if templates
            else [list(initial)]
        )
        steps: list[Step] = []
        previous_positive = 0
        masks = previous_masks = None
        timings = dict.fromkeys(("cam", "prompts", "classifier", "crf"), 0.0)
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] += now - clock
            clock = now

        while True:
            outputs = cam(image, class_embeddings(self.cam_clip, cam_texts, None))
            lap("cam")
            prompted = [
                rgb
                if mask.sum() <= 1
                else apply_visual_prompts(
                    rgb,
                    (mask > settings.mask_threshold).astype(np.uint8),
                    list(settings.visual_prompt_type),
                )
                for mask in outputs.masks
            ]
            lap("prompts")
            scores = self._classify(prompted, semantic_texts)
            lap("classifier")
            diagonal = torch.diagonal(scores)
            kept = [
                i
                for i, score in enumerate(diagonal.tolist())
                if score > settings.confidence_threshold
            ]
            if not kept:
                kept = [int(torch.argmax(diagonal))]
            all_scores = torch.zeros(len(cam_texts))
            all_scores[kept] = diagonal[kept]
            steps.append(Step(cam_texts, outputs, prompted, scores, kept, all_scores))
            carried = [carried[i] for i in kept]
            semantic_texts = [[texts[i] for i in kept] for texts in semantic_texts]
            cam_texts = list(carried)
            masks = outputs.masks
            if masks.max() == 0 and previous_masks is not None:
                masks = previous_masks
            previous_masks = masks
            positive = int((all_scores > 0).sum())
            if positive == previous_positive:
                break
            previous_positive = positive
        label = crf_labels(rgb, masks, settings.bg_factor)
        lap("crf")
        refined = [(label == j).astype(np.float32) for j in range(1, int(label.max()) + 1)]
        final_masks = np.zeros((len(names), *rgb.shape[:2]), np.float32)
        final_scores = np.zeros(len(names), np.float32)
        # As in the original, proposals pair with CRF channels by position; the CRF has only
        # max(label) channels, so trailing proposals that win no pixel lose mask and score.
        for index, mask, score in zip(
            (initial.index(text) for text in carried),
            refined,
            steps[-1].all_scores.tolist(),
            strict=False,
        ):
            final_masks[index] = mask
            final_scores[index] = score
        return PassResult(final_masks, final_scores, steps, label, timings)


def assign_labels(
    passes: list[tuple[PassResult, list[int]]], shape: tuple[int, int], unassigned: int
) -> np.ndarray:
    """Paint each pass's masks (> 0.5, score > 0) in ascending score order, passes in order
    (stuff first, then things); ``ids[i]`` is the label of a pass's vocabulary position i."""
    labels = np.full(shape, unassigned, np.int64)
    for result, ids in passes:
        for index in np.argsort(result.scores, kind="stable"):
            if result.scores[index] > 0:
                labels[result.masks[index] > 0.5] = ids[index]
    return labels
