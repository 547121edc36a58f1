"""CaR's structure and cost on one image: parameters (all frozen: CaR is training-free), FLOPs
and time per stage, tensor shapes, and how cost grows with the vocabulary.

The worker's path runs once through ``CarPredictor.predict`` (thing pass, and the stuff pass
when stuff names are given) with probes on its stages (``ovss_common.inspection``), then once
more with the vocabulary doubled. Every stage of the recurrence depends on the number of
classes, so the second run is a whole prediction too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from clip.model import CLIP

from ovss_car import cam as cam_module
from ovss_car import car as car_module
from ovss_car import classifier as classifier_module
from ovss_car.cam import ClipCam
from ovss_car.car import CaR, PassResult
from ovss_car.predictor import CarPredictor, Prediction
from ovss_common.inspection import (
    Probe,
    doubled_vocabulary,
    measure,
    parameter_rows,
    report,
    scaling,
    shape_row,
)

#: CaR trains nothing: both CLIPs are OpenAI's released ones, frozen (the original's
#: inference code loads them and runs no optimiser: google-research/google-research at
#: 8d8a4f1b27753c7580d16261a1468b3d6ad2c3d3, clip_as_rnn/modeling/model/car.py, and its
#: README, which calls CaR training-free).
TRAINING = {
    "summary": "training-free: both CLIPs keep OpenAI's released weights; nothing is trained",
    "source": (
        "google-research/google-research@8d8a4f1b27753c7580d16261a1468b3d6ad2c3d3: "
        "clip_as_rnn/modeling/model/car.py (no training code; OpenAI CLIPs loaded frozen)"
    ),
}
#: The stage around the whole prediction; its own work is the names, label assignment and
#: scores.
PREDICT = "CarPredictor.predict: names, label assignment, scores"
#: The stage around one pass; its own work is the recurrence's bookkeeping.
RUN = "CaR.run: one pass: recurrence bookkeeping, final masks"


def clip_geometry(model: CLIP) -> str:
    """The image tower's width, depth and patch size, in words."""
    visual = model.visual
    return (
        f"ViT width {visual.conv1.out_channels}, {len(visual.transformer.resblocks)} blocks, "
        f"patch {visual.conv1.kernel_size[0]}"
    )


def probes(model: CaR) -> list[Probe]:
    """The stages of ``CarPredictor.predict``, nested as they run."""
    cam_blocks = len(model.cam_clip.visual.transformer.resblocks)
    sem_blocks = len(model.sem_clip.visual.transformer.resblocks)
    return [
        Probe(model, "run", RUN, per_class=True),
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


def pass_shapes(result: PassResult, prefix: str) -> list[dict[str, Any]]:
    """The arrays through one pass: per recurrent step, then the final ones."""
    rows = []
    for number, step in enumerate(result.steps, start=1):
        cam, name = step.cam, f"{prefix}step {number}"
        rows += [
            shape_row(f"{name}: CAM probabilities", cam.probabilities, "[1, n + n_bg]"),
            shape_row(f"{name}: Grad-CAMs", cam.gradcams, "[n, h, w] token grid"),
            shape_row(f"{name}: CAM masks", cam.masks, "[n, H, W] after CLIP-ES"),
            shape_row(
                f"{name}: prompted images",
                (len(step.prompted), *step.prompted[0].shape),
                "n x [H, W, 3]",
            ),
            shape_row(f"{name}: classifier scores S", step.scores, "[n, n]"),
        ]
    rows += [
        shape_row(f"{prefix}CRF labels", result.crf_label, "[H, W], 0 = background"),
        shape_row(f"{prefix}final masks", result.masks, "[C, H, W]"),
        shape_row(f"{prefix}final scores", result.scores, "[C]"),
    ]
    return rows


def shapes(rgb: np.ndarray, prediction: Prediction) -> list[dict[str, Any]]:
    """The arrays through the prediction: each pass (stuff first), then the outputs."""
    rows = [shape_row("input image", rgb, "H x W x RGB, uint8")]
    for (result, _), name in zip(prediction.passes, prediction.pass_names, strict=True):
        rows += pass_shapes(result, "stuff " if name == "stuff" else "")
    rows += [
        shape_row("scores", prediction.scores, "[C, H, W]: final mask x score"),
        shape_row("label map", prediction.label_map, "[H, W]"),
    ]
    return rows


def _steps(prediction: Prediction) -> str:
    return "; ".join(
        ", ".join(f"{len(step.cam_texts)} -> {len(step.kept)}" for step in result.steps)
        for result, _ in prediction.passes
    )


def inspect_car(
    predictor: CarPredictor, rgb: np.ndarray, vocabulary: list[str], stuff: list[str]
) -> dict[str, Any]:
    """The ``inspect`` result of ``predictor`` on ``rgb`` (``[H, W, 3]`` uint8): the worker's
    prediction, with the stuff pass over ``stuff`` (names of ``vocabulary``) when any."""
    model = predictor.model
    device = str(model.cam_clip.visual.conv1.weight.device)

    def run(names: list[str]) -> Prediction:
        model.clear_cache()
        return predictor.predict(rgb, names, stuff, keep_scores=True)

    recorder, prediction = measure(device, probes(model), PREDICT, lambda: run(vocabulary))
    doubled = doubled_vocabulary(vocabulary)
    larger, larger_prediction = measure(device, probes(model), PREDICT, lambda: run(doubled))
    growth = scaling(
        recorder,
        larger,
        (len(vocabulary), len(doubled)),
        "the whole prediction run again with the vocabulary doubled (filler names, things): "
        "each class costs a CAM text, a Grad-CAM, a visual prompt, a classifier image pass "
        "and one classifier prompt per template at every step it survives; the number of "
        "steps and of classes kept depend on the image and the weights (texts per step: "
        f"{_steps(prediction)} with {len(vocabulary)} names, {_steps(larger_prediction)} with "
        f"{len(doubled)})",
    )
    clips = torch.nn.ModuleDict({"cam_clip": model.cam_clip, "sem_clip": model.sem_clip})
    passes = " and ".join(f"{name} pass" for name in prediction.pass_names)
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
        shapes=shapes(rgb, prediction),
        growth=growth,
        notes=[
            f"{passes}; texts per step (in -> kept): {_steps(prediction)}",
            f"text towers see: {', '.join(predictor.text_names(vocabulary))}",
        ],
    )
