"""CaR's structure and cost on one image: parameters (all frozen: CaR is training-free), FLOPs
and time per stage, tensor shapes, and how cost grows with the vocabulary.

The real thing pass runs once through ``CaR.run`` with probes on its stages
(``ovss_common.inspection``), then once more with the vocabulary doubled. Every stage of the
recurrence depends on the number of classes, so the second run is a whole pass too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from clip.model import CLIP
from PIL import Image

from ovss_car import cam as cam_module
from ovss_car import car as car_module
from ovss_car import classifier as classifier_module
from ovss_car.cam import ClipCam
from ovss_car.car import CaR, PassResult, PassSettings, assign_labels
from ovss_common.inspection import (
    Probe,
    StageRecorder,
    device_synchronizer,
    filler_names,
    parameter_rows,
    report,
    scaling,
    shape_row,
)
from ovss_common.protocol import NO_CLASS

#: CaR trains nothing (source: the upstream spec, upstream_spec.md §3 and §3d).
TRAINING = {
    "summary": "training-free: both CLIPs keep OpenAI's released weights; nothing is trained",
    "source": "upstream_spec.md §3 ('Training-free') and §3d ('None')",
}
#: The stage around the whole pass; its own work is the recurrence's bookkeeping.
RUN = "CaR.run: recurrence bookkeeping, final masks"


def clip_geometry(model: CLIP) -> str:
    """The image tower's width, depth and patch size, in words."""
    visual = model.visual
    return (
        f"ViT width {visual.conv1.out_channels}, {len(visual.transformer.resblocks)} blocks, "
        f"patch {visual.conv1.kernel_size[0]}"
    )


def probes(model: CaR) -> list[Probe]:
    """The stages of ``CaR.run``, nested as they run."""
    cam_blocks = len(model.cam_clip.visual.transformer.resblocks)
    sem_blocks = len(model.sem_clip.visual.transformer.resblocks)
    return [
        Probe(
            car_module,
            "class_embeddings",
            "CAM text encoder: texts, background words",
            per_class=True,
        ),
        Probe(
            ClipCam, "__call__", "CAM: CLIP-ES affinity, boxes, propagation, resize", per_class=True
        ),
        Probe(
            cam_module,
            "encode_image_tokens",
            f"CAM image tower: blocks 0-{cam_blocks - 2}, attention maps",
        ),
        Probe(
            ClipCam, "_gradcam", "Grad-CAM per text: last block forward + backward", per_class=True
        ),
        Probe(car_module, "apply_visual_prompts", "visual prompts on each mask", per_class=True),
        Probe(
            model, "_classify", "classifier: per-template logits, double softmax", per_class=True
        ),
        Probe(
            car_module, "preprocess_images", "classifier input: resize, centre crop", per_class=True
        ),
        Probe(
            classifier_module,
            "image_embeddings",
            f"classifier image tower: blocks 0-{sem_blocks - 2} per prompted image",
            per_class=True,
        ),
        Probe(
            model,
            "prompt_embeddings",
            "classifier text encoder: templates x classes",
            per_class=True,
        ),
        Probe(car_module, "crf_labels", "DenseCRF"),
    ]


def _measure(
    model: CaR, picture: Image.Image, names: list[str], settings: PassSettings
) -> tuple[StageRecorder, PassResult]:
    device = str(model.cam_clip.visual.conv1.weight.device)
    recorder = StageRecorder(device_synchronizer(device))
    model.clear_cache()
    with recorder.probes(probes(model)), recorder.stage(RUN, per_class=True):
        result = model.run(picture, names, settings)
    return recorder, result


def shapes(rgb: np.ndarray, result: PassResult) -> list[dict[str, Any]]:
    """The arrays through the pass: per recurrent step, then the final ones."""
    rows = [shape_row("input image", rgb, "H x W x RGB, uint8")]
    for number, step in enumerate(result.steps, start=1):
        cam = step.cam
        rows += [
            shape_row(f"step {number}: CAM probabilities", cam.probabilities, "[1, n + n_bg]"),
            shape_row(f"step {number}: Grad-CAMs", cam.gradcams, "[n, h, w] token grid"),
            shape_row(f"step {number}: CAM masks", cam.masks, "[n, H, W] after CLIP-ES"),
            shape_row(
                f"step {number}: prompted images",
                (len(step.prompted), *step.prompted[0].shape),
                "n x [H, W, 3]",
            ),
            shape_row(f"step {number}: classifier scores S", step.scores, "[n, n]"),
        ]
    labels = assign_labels([(result, list(range(len(result.scores))))], rgb.shape[:2], NO_CLASS)
    rows += [
        shape_row("CRF labels", result.crf_label, "[H, W], 0 = background"),
        shape_row("final masks", result.masks, "[C, H, W]"),
        shape_row("final scores", result.scores, "[C]"),
        shape_row("label map", labels, "[H, W]"),
    ]
    return rows


def _steps(result: PassResult) -> str:
    return ", ".join(f"{len(step.cam_texts)} -> {len(step.kept)}" for step in result.steps)


def inspect_car(
    model: CaR,
    settings: PassSettings,
    rgb: np.ndarray,
    vocabulary: list[str],
    text_names: Callable[[list[str]], list[str]],
) -> dict[str, Any]:
    """The ``inspect`` result of CaR's thing pass on ``rgb`` (``[H, W, 3]`` uint8);
    ``text_names`` gives the names the text towers see (the VOC config's longer names)."""
    picture = Image.fromarray(rgb)
    recorder, result = _measure(model, picture, text_names(vocabulary), settings)
    doubled = [*vocabulary, *filler_names(vocabulary, len(vocabulary))]
    larger, larger_result = _measure(model, picture, text_names(doubled), settings)
    growth = scaling(
        recorder,
        larger,
        (len(vocabulary), len(doubled)),
        "the whole pass run again with the vocabulary doubled (filler names): each class "
        "costs a CAM text, a Grad-CAM, a visual prompt, a classifier image pass and one "
        "classifier prompt per template at every step it survives; the number of steps and "
        f"of classes kept depend on the image and the weights (texts per step: "
        f"{_steps(result)} with {len(vocabulary)} names, {_steps(larger_result)} with "
        f"{len(doubled)})",
    )
    clips = torch.nn.ModuleDict({"cam_clip": model.cam_clip, "sem_clip": model.sem_clip})
    return report(
        method="car",
        architecture=(
            f"CaR: CAM CLIP ({clip_geometry(model.cam_clip)}) + classifier CLIP "
            f"({clip_geometry(model.sem_clip)})"
        ),
        image=rgb.shape[:2],
        vocabulary=vocabulary,
        parameters=parameter_rows(clips, lambda name: False),
        training=TRAINING,
        recorder=recorder,
        shapes=shapes(rgb, result),
        growth=growth,
        notes=[
            f"thing pass only (no stuff names); {len(result.steps)} recurrent steps, texts per "
            f"step: {_steps(result)}",
        ],
    )
