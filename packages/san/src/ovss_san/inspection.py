"""SAN's structure and cost on one image: parameters (trained vs frozen), FLOPs and time per
stage, tensor shapes, and how cost grows with the vocabulary.

The real eval (or demo) path runs once through ``SanPredictor.predict`` with probes on its
stages (``ovss_common.inspection``); then once more with the vocabulary doubled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ovss_common.inspection import (
    Probe,
    StageRecorder,
    doubled_vocabulary,
    measure,
    parameter_rows,
    report,
    scaling,
    shape_row,
)
from ovss_san.predictor import Prediction, SanPredictor
from ovss_san.san import SAN

#: What SAN's training updates: its released configs keep CLIP frozen except the visual
#: positional embedding; the released logs count 8.37 M trainable parameters for ViT-B/16.
TRAINING = {
    "summary": (
        "trained: the side adapter network (side ViT, queries, fusion layers, mask decoder), "
        "CLIP's visual positional embedding and the learned background embedding; frozen: "
        "the rest of CLIP (image and text towers)"
    ),
    "source": (
        "the released SAN configs freeze CLIP but its visual positional embedding; the "
        "released logs count 8.37 M (ViT-B/16) and 9.32 M (ViT-L/14) trainable parameters, "
        "which tests/test_trainable.py checks"
    ),
}
TRAINED_CLIP_PARAMETERS = ("clip_visual_extractor.positional_embedding", "ov_classifier.bg_embed")


def trained(name: str) -> bool:
    """Whether SAN's training updated the parameter ``name``."""
    return name.startswith("side_adapter_network.") or name in TRAINED_CLIP_PARAMETERS


def probes(predictor: SanPredictor) -> list[Probe]:
    """The stages of ``predictor.predict``, nested as they run."""
    model = predictor.model
    side = model.side_adapter_network
    extractor_blocks = len(model.clip_visual_extractor.resblocks)
    head = model.clip_rec_head
    last = head.first_layer_idx + len(head.resblocks) - 1
    return [
        Probe(predictor, "resize", "resize"),
        Probe(model, "preprocess", "normalise + pad to x32"),
        Probe(model, "run", "SAN.run: CLIP input downscale, mask-class logits", per_class=True),
        Probe(model.ov_classifier, "forward", "text encoder: class embeddings", per_class=True),
        Probe(
            model.clip_visual_extractor,
            "forward",
            f"CLIP image tower: stem + blocks 0-{extractor_blocks - 1}",
        ),
        Probe(side, "forward", "side adapter ViT"),
        *(
            Probe(layer, "forward", "fusion of CLIP features")
            for layer in side.fusion_layers.values()
        ),
        Probe(side.mask_decoder, "forward", "mask decoder: masks + attention biases"),
        Probe(
            head, "forward", f"recognition head: CLIP blocks {head.first_layer_idx}-{last} + biases"
        ),
    ]


#: The stage around the whole predict call; its own work is the post-processing.
PREDICT = "predict: masks upsampled, scores combined, argmax"


def _measure(
    predictor: SanPredictor, rgb: np.ndarray, names: list[str], pipeline: str
) -> tuple[StageRecorder, Prediction]:
    model = predictor.model
    model.ov_classifier.clear_cache()
    return measure(
        str(model.device),
        probes(predictor),
        PREDICT,
        lambda: predictor.predict(rgb, names, pipeline=pipeline, keep_scores=True),
    )


def shapes(rgb: np.ndarray, prediction: Prediction) -> list[dict[str, Any]]:
    """The tensors through the pipeline (batch of one image)."""
    out = prediction.outputs
    rows = [
        shape_row("input image", rgb, "H x W x RGB, uint8"),
        shape_row("resized image", prediction.resized, "short side 640 (eval path)"),
        shape_row("normalised, padded batch", out.images.tensor, "[B, 3, Hp, Wp]"),
        shape_row("CLIP input", out.clip_input, "downscaled by CLIP_RESOLUTION"),
    ]
    rows += [
        shape_row(f"CLIP tokens after block {i}" if i else "CLIP tokens after ln_pre", m)
        for i, m in sorted(out.clip_features.maps.items())
    ]
    rows += [
        shape_row("mask logits", out.mask_preds, "[B, Q, H/16, W/16] on the side grid"),
        shape_row("attention biases", out.attn_biases[0], "[B, heads, Q, H/16, W/16]"),
        shape_row("mask embeddings", out.mask_embeddings, "[B, Q, D], L2-normalised"),
        shape_row("class weights", out.class_weights, "[C + 1, D], last row: background"),
        shape_row("mask-class logits", out.mask_logits, "[B, Q, C + 1]"),
        shape_row("scores", prediction.scores, "[C, H, W] at the input size"),
        shape_row("label map", prediction.label_map, "[H, W]"),
    ]
    return rows


def architecture(model: SAN) -> str:
    """One line: the CLIP and side ViT geometry."""
    extractor, side = model.clip_visual_extractor, model.side_adapter_network
    depth = len(extractor.resblocks) + len(model.clip_rec_head.resblocks)
    return (
        f"SAN: CLIP ViT (width {extractor.width}, {depth} blocks, patch "
        f"{extractor.conv1.kernel_size[0]}) + side ViT (width {side.vit_model.embed_dim}, "
        f"{len(side.vit_model.blocks)} blocks), {side.num_queries} queries"
    )


def inspect_san(
    predictor: SanPredictor, rgb: np.ndarray, vocabulary: list[str], pipeline: str
) -> dict[str, Any]:
    """The ``inspect`` result of a loaded SAN on ``rgb`` (``[H, W, 3]`` uint8)."""
    model: SAN = predictor.model
    recorder, prediction = _measure(predictor, rgb, vocabulary, pipeline)
    doubled = doubled_vocabulary(vocabulary)
    larger, _ = _measure(predictor, rgb, doubled, pipeline)
    growth = scaling(
        recorder,
        larger,
        (len(vocabulary), len(doubled)),
        "the whole predict call, run again with the vocabulary doubled (filler names); "
        "the text encoder runs 14 prompts per class, the logits and the score combination "
        "grow linearly with C; everything else is independent of C",
    )
    return report(
        method="san",
        architecture=architecture(model),
        image=rgb.shape[:2],
        vocabulary=vocabulary,
        parameters=parameter_rows(model, trained),
        training=TRAINING,
        recorder=recorder,
        shapes=shapes(rgb, prediction),
        growth=growth,
        notes=[f"pipeline: {pipeline}"],
    )
