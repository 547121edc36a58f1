"""OVSeg's structure and cost on one image: parameters (trained vs frozen), FLOPs and time per
stage, tensor shapes, and how cost grows with the vocabulary.

The real path runs once through ``OVSegPredictor.predict`` with probes on its stages
(``ovss_common.inspection``). To see the per-class cost without paying for the proposals and
the CLIP region passes again (neither depends on the vocabulary), the second run, with the
vocabulary doubled, replays their results from the first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from detectron2.data.transforms import ResizeTransform

from ovss_common.inspection import (
    Probe,
    StageRecorder,
    doubled_vocabulary,
    measure,
    parameter_rows,
    patched,
    report,
    scaling,
    shape_row,
)
from ovss_ovseg.ovseg import OVSeg
from ovss_ovseg.predictor import OVSegPredictor, Prediction

#: OVSeg's training recipe (source: facebookresearch/ov-seg at 36f49d49, its README's three
#: training phases and the open_clip_training scripts, which pass ``--lock-text``).
TRAINING = {
    "summary": (
        "trained: the backbone, pixel decoder and transformer decoder and the no-object "
        "embedding (segmentation training on COCO-Stuff, CLIP frozen); CLIP's image tower and "
        "logit scale (CLIP fine-tuning on masked crops, text tower locked); the mask prompts "
        "visual.mask_embedding (mask prompt tuning, both towers locked); frozen: CLIP's text "
        "tower"
    ),
    "source": (
        "facebookresearch/ov-seg@36f49d496714998058d115ffb6172d9d84c59065: README.md "
        "(segmentation training, CLIP fine-tuning, mask prompt tuning); "
        "open_clip_training/src/scripts/coco_proposal_1cap_finetune_VitL.sh and "
        "coco_proposal_1cap_mask_prompt_tuning_VitL.sh (--lock-text)"
    ),
}
CLIP_PREFIX = "clip_adapter.clip_model."


def trained(name: str) -> bool:
    """Whether one of OVSeg's training phases updated the parameter ``name``."""
    if not name.startswith(CLIP_PREFIX):
        return True
    rest = name[len(CLIP_PREFIX) :]
    return rest.startswith("visual.") or rest == "logit_scale"


#: The stage around the whole predict call; its own work is the final post-processing.
PREDICT = "predict: scores resized to the input, argmax"
PROPOSALS = "proposals (MaskFormer)"
REGION_TOWER = "CLIP image tower with mask prompts, on the K region crops"


def probes(predictor: OVSegPredictor) -> list[Probe]:
    """The stages of ``predictor.predict``, nested as they run."""
    model = predictor.model
    adapter = model.clip_adapter
    decoder = model.sem_seg_head.predictor
    return [
        Probe(ResizeTransform, "apply_image", "resize"),
        Probe(model, "preprocess", "normalise + pad to x32"),
        Probe(model, "propose", PROPOSALS),
        Probe(model.backbone, "forward", f"backbone ({type(model.backbone).__name__})"),
        Probe(model.sem_seg_head.pixel_decoder, "forward", "pixel decoder (FPN): mask features"),
        Probe(
            decoder,
            "forward",
            f"transformer decoder ({len(decoder.transformer.decoder.layers)} layers): "
            "class + mask embeddings",
        ),
        Probe(
            model, "classify", "classify: MaskFormer logits, softmaxes, ensemble", per_class=True
        ),
        Probe(adapter, "text_features", "text encoder: class embeddings", per_class=True),
        Probe(model, "_mask_probs", "mask logits upsampled, sigmoid"),
        Probe(adapter, "regions", "region crops: box, mask fill, resize to 224"),
        Probe(adapter, "region_features", REGION_TOWER, keep=True),
        Probe(OVSeg, "combine", "scores = class scores x masks", per_class=True),
    ]


def _measure(
    predictor: OVSegPredictor,
    rgb: np.ndarray,
    names: list[str],
    pipeline: str,
    stage_probes: list[Probe],
) -> tuple[StageRecorder, Prediction]:
    model = predictor.model
    model.clip_adapter._cache.clear()
    return measure(
        str(model.device),
        stage_probes,
        PREDICT,
        lambda: predictor.predict(rgb, names, pipeline),
    )


def _doubled(
    predictor: OVSegPredictor,
    rgb: np.ndarray,
    names: list[str],
    pipeline: str,
    first: StageRecorder,
    prediction: Prediction,
) -> tuple[StageRecorder, list[str]]:
    """The run with ``names``, replaying the proposals and the CLIP region features."""
    model = predictor.model
    all_probes = probes(predictor)
    nested = [name for name, stats in first.stages.items() if stats.parent == PROPOSALS]
    replayed = [PROPOSALS, REGION_TOWER, *nested]
    features = first.stages[REGION_TOWER].result if REGION_TOWER in first.stages else None
    kept = [probe for probe in all_probes if probe.stage not in replayed]
    with (
        patched(model, "propose", lambda images: prediction.proposals),
        patched(model.clip_adapter, "region_features", lambda batch: features),
    ):
        recorder, _ = _measure(predictor, rgb, names, pipeline, kept)
    return recorder, replayed


def shapes(rgb: np.ndarray, prediction: Prediction) -> list[dict[str, Any]]:
    """The tensors through the pipeline (batch of one image)."""
    proposals, classification = prediction.proposals, prediction.classification
    rows = [
        shape_row("input image", rgb, "H x W x RGB, uint8"),
        shape_row("resized image", prediction.resized, "short side 640 (Swin-B configs)"),
        shape_row("normalised, padded batch", proposals.images.tensor, "[B, 3, Hp, Wp]"),
    ]
    rows += [shape_row(f"backbone {name}", feature) for name, feature in proposals.features.items()]
    rows += [
        shape_row("mask features", proposals.mask_features, "[B, MASK_DIM, Hp/4, Wp/4]"),
        shape_row("class embeddings", proposals.class_embeddings, "[B, Q, D]"),
        shape_row("mask logits", proposals.mask_preds, "[B, Q, Hp/4, Wp/4]"),
        shape_row("text features", classification.text_features, "[C + 1, D], last: no object"),
        shape_row("MaskFormer logits", classification.pred_logits, "[Q, C + 1]"),
        shape_row("mask probabilities", classification.mask_probs, "[Q, Hr, Wr]"),
    ]
    if classification.regions is not None:
        regions = classification.regions
        rows += [
            shape_row("region crops", regions.regions, "[K, 3, 224, 224], K valid proposals"),
            shape_row("region masks", regions.region_masks, "[K, 1, 224, 224]"),
            shape_row("CLIP logits", classification.clip_logits, "[K, C + 1]"),
        ]
    rows += [
        shape_row("class scores", classification.class_scores, "[Q, C] after the ensemble"),
        shape_row("scores", prediction.scores, "[C, H, W] at the input size"),
        shape_row("label map", prediction.label_map, "[H, W]"),
    ]
    return rows


def architecture(model: OVSeg) -> str:
    """One line: backbone, queries and the CLIP geometry."""
    visual = model.clip_adapter.clip_model.visual
    return (
        f"OVSeg: {type(model.backbone).__name__} + MaskFormer "
        f"({model.sem_seg_head.predictor.query_embed.num_embeddings} queries), CLIP ViT "
        f"(width {visual.conv1.out_channels}, {len(visual.transformer.resblocks)} blocks, "
        f"patch {visual.conv1.kernel_size[0]}) with mask prompts, ensemble weight "
        f"{model.clip_ensemble_weight}"
    )


def inspect_ovseg(
    predictor: OVSegPredictor, rgb: np.ndarray, vocabulary: list[str], pipeline: str
) -> dict[str, Any]:
    """The ``inspect`` result of a loaded OVSeg on ``rgb`` (``[H, W, 3]`` uint8)."""
    model: OVSeg = predictor.model
    recorder, prediction = _measure(predictor, rgb, vocabulary, pipeline, probes(predictor))
    doubled = doubled_vocabulary(vocabulary)
    larger, replayed = _doubled(predictor, rgb, doubled, pipeline, recorder, prediction)
    regions = prediction.classification.regions
    valid = int(regions.valid.sum()) if regions is not None else 0
    growth = scaling(
        recorder,
        larger,
        (len(vocabulary), len(doubled)),
        "the predict call run again with the vocabulary doubled (filler names); the "
        "proposals and the CLIP region passes do not depend on the vocabulary and were "
        "replayed from the first run (their figures are the first run's); the text encoder "
        "runs 14 prompts per class, the logits and the score combination grow linearly with C",
        replayed,
    )
    return report(
        method="ovseg",
        architecture=architecture(model),
        image=rgb.shape[:2],
        vocabulary=vocabulary,
        parameters=parameter_rows(
            model, trained, deeper=(CLIP_PREFIX[:-1], f"{CLIP_PREFIX}visual")
        ),
        training=TRAINING,
        recorder=recorder,
        shapes=shapes(rgb, prediction),
        growth=growth,
        notes=[
            f"pipeline: {pipeline}",
            f"{valid} of {prediction.proposals.mask_preds.shape[1]} proposals had a pixel above "
            f"the mask threshold and went through CLIP (K = {valid}); the CLIP cost is "
            "proportional to K",
        ],
    )
