"""Optional SAM refinement of CaR's final masks (the original's ``test.use_pseudo: false`` path).

SAM's automatic mask generator segments the whole image once (no crops). For every non-empty
CaR mask, the SAM masks that overlap it enough are united: a SAM mask is kept when its
intersection-over-minimum with the CaR mask exceeds ``iom_thres`` (IoM = the larger of
∩/|SAM| and ∩/|CaR|, where ∩/|SAM| counts only if ∩/|CaR| reaches ``min_pred_threshold``);
when none passes, the single best one is kept. The union replaces the CaR mask only when
their IoU exceeds ``matching_thresh``. No benchmark config of the original enables this.

SAM is built from vanilla ``segment_anything`` modules with its geometry read from the
checkpoint (ViT-B, -L, -H or any smaller test model); HQ-SAM checkpoints are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from ovss_common.checkpoints import CheckpointError, load_state_dict_strictly, read_state_dict

#: SAM's fixed input side and its mask decoder's fixed head count.
IMAGE_SIZE = 1024
DECODER_HEADS = 8


@dataclass(frozen=True)
class SamSettings:
    """The generator and matching knobs (``sam.*`` config values, ``car.iom_thres``).

    The defaults are the original code's defaults for keys a config leaves out;
    ``matching_thresh`` is read by the original yet set by none of its configs.
    """

    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    iom_thres: float = 0.0
    min_pred_threshold: float = 0.2
    matching_thresh: float = 0.9


def intersection_over_minimum(
    mask: np.ndarray, sam_masks: np.ndarray, min_pred_threshold: float
) -> np.ndarray:
    """``[N]`` IoM of one CaR mask ``[H, W]`` (0/1) with each SAM mask of ``[N, H, W]``."""
    prediction = mask.astype(np.float64).ravel()
    candidates = sam_masks.reshape(len(sam_masks), -1).astype(np.float64)
    intersection = candidates @ prediction
    with np.errstate(divide="ignore", invalid="ignore"):
        over_sam = intersection / candidates.sum(axis=1)
        over_mask = intersection / prediction.sum()
    over_sam = np.where(over_mask < min_pred_threshold, 0.0, over_sam)
    return np.fmax(over_sam, over_mask)


def matched_union(mask: np.ndarray, sam_masks: np.ndarray, settings: SamSettings) -> np.ndarray:
    """``[H, W]`` bool union of the SAM masks matched to ``mask`` (the best one when none
    passes ``iom_thres``)."""
    iom = intersection_over_minimum(mask, sam_masks, settings.min_pred_threshold)
    keep = iom > settings.iom_thres
    if not keep.any():
        keep[np.argmax(np.nan_to_num(iom, nan=-np.inf))] = True
    return sam_masks[keep].any(axis=0)


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    """IoU of two ``[H, W]`` masks binarised at 0.5 (0 when both are empty)."""
    a, b = first > 0.5, second > 0.5
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def refine_masks(masks: np.ndarray, sam_masks: np.ndarray, settings: SamSettings) -> np.ndarray:
    """``[N, H, W]`` CaR masks with each non-empty one replaced by its matched SAM union
    when they agree (IoU > ``matching_thresh``); ``sam_masks`` is ``[M, H, W]`` bool."""
    refined = masks.copy()
    if not len(sam_masks):
        return refined
    for index, mask in enumerate(masks):
        if mask.sum() <= 0:
            continue
        union = matched_union(mask, sam_masks, settings)
        if mask_iou(union.astype(np.float32), mask) > settings.matching_thresh:
            refined[index] = union.astype(masks.dtype)
    return refined


def _block_count(state: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {int(key[len(prefix) :].split(".")[0]) for key in state if key.startswith(prefix)}
    return max(indices) + 1 if indices else 0


@dataclass(frozen=True)
class SamGeometry:
    """The sizes of a SAM, as its checkpoint's shapes give them."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    mlp_ratio: float
    global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_dim: int
    decoder_depth: int
    decoder_mlp_dim: int


def sam_geometry(state: dict[str, torch.Tensor], path: str | Path) -> SamGeometry:
    """Read a vanilla SAM's geometry from its state dict (``path`` names it in errors).

    Global-attention blocks are those whose relative position table spans the whole
    ``1024 / patch`` grid; the others span the window.
    """
    if any(key.startswith("mask_decoder.hf_") for key in state):
        raise CheckpointError(
            f"{path}: an HQ-SAM checkpoint; the refinement runs vanilla segment_anything "
            "(use sam_vit_h_4b8939.pth)"
        )
    try:
        patch = state["image_encoder.patch_embed.proj.weight"]
        head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        mlp = state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0]
        prompt_dim = state["image_encoder.neck.0.weight"].shape[0]
        decoder_mlp = state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"{path}: not a SAM checkpoint (no {exc.args[0]})") from None
    dim, patch_size = patch.shape[0], patch.shape[-1]
    depth = _block_count(state, "image_encoder.blocks.")
    spans = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
    grid_span = 2 * (IMAGE_SIZE // patch_size) - 1
    window_spans = [span for span in spans if span != grid_span]
    return SamGeometry(
        embed_dim=dim,
        depth=depth,
        num_heads=dim // head_dim,
        patch_size=patch_size,
        mlp_ratio=mlp / dim,
        global_attn_indexes=tuple(i for i, span in enumerate(spans) if span == grid_span),
        window_size=(window_spans[0] + 1) // 2 if window_spans else 0,
        prompt_dim=prompt_dim,
        decoder_depth=_block_count(state, "mask_decoder.transformer.layers."),
        decoder_mlp_dim=decoder_mlp,
    )


def build_sam(state: dict[str, torch.Tensor], path: str | Path) -> Sam:
    """A vanilla SAM with the geometry of the checkpoint ``state`` (read from ``path``),
    weights loaded key for key."""
    geometry = sam_geometry(state, path)
    grid = IMAGE_SIZE // geometry.patch_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=geometry.depth,
            embed_dim=geometry.embed_dim,
            img_size=IMAGE_SIZE,
            mlp_ratio=geometry.mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=geometry.num_heads,
            patch_size=geometry.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=geometry.global_attn_indexes,
            window_size=geometry.window_size,
            out_chans=geometry.prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=geometry.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=geometry.decoder_depth,
                embedding_dim=geometry.prompt_dim,
                mlp_dim=geometry.decoder_mlp_dim,
                num_heads=DECODER_HEADS,
            ),
            transformer_dim=geometry.prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    load_state_dict_strictly(model, state, path, "SAM")
    return model.eval()


class SamRefiner:
    """SAM's automatic mask generator with the settings its masks are matched with.

    Args:
        checkpoint: a vanilla SAM checkpoint (``sam_vit_h_4b8939.pth`` officially).
        settings: generator and matching knobs.
        device: where SAM runs.
    """

    def __init__(self, checkpoint: str | Path, settings: SamSettings, device: str) -> None:
        self.checkpoint = str(checkpoint)
        self.settings = settings
        self.model = build_sam(read_state_dict(checkpoint), checkpoint).to(device)
        self.generator = SamAutomaticMaskGenerator(
            model=self.model,
            points_per_side=settings.points_per_side,
            pred_iou_thresh=settings.pred_iou_thresh,
            stability_score_thresh=settings.stability_score_thresh,
            box_nms_thresh=settings.box_nms_thresh,
            crop_n_layers=0,
            crop_n_points_downscale_factor=1,
        )

    @torch.no_grad()
    def sam_masks(self, rgb: np.ndarray) -> np.ndarray:
        """``[M, H, W]`` bool automatic masks of an ``[H, W, 3]`` uint8 RGB image."""
        records: list[dict[str, Any]] = self.generator.generate(rgb)
        if not records:
            return np.zeros((0, *rgb.shape[:2]), bool)
        return np.stack([record["segmentation"] for record in records])
