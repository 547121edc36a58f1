"""OVSeg meta-architecture: MaskFormer proposals, classified by text embeddings and by the
mask-adapted CLIP on region crops, combined by a geometric ensemble."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from clip.model import CLIP
from detectron2.config import CfgNode, configurable
from detectron2.modeling import Backbone, build_backbone
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F

from ovss_common.torch_layers import normalised_batch
from ovss_ovseg import backbone as _registers_backbones  # noqa: F401
from ovss_ovseg.clip_adapter import CLIP_GEOMETRIES, TEMPERATURE, ClipAdapter, RegionBatch
from ovss_ovseg.pixel_decoder import BasePixelDecoder
from ovss_ovseg.transformer_decoder import OpenVocabTransformerPredictor


class MaskFormerHead(nn.Module):
    """Pixel decoder plus query decoder (released names ``pixel_decoder``, ``predictor``)."""

    def __init__(
        self,
        pixel_decoder: BasePixelDecoder,
        predictor: OpenVocabTransformerPredictor,
        transformer_in_feature: str,
    ) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.transformer_in_feature = transformer_in_feature

    def forward(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns mask features, class embeddings ``[B, Q, D]`` and mask logits
        ``[B, Q, H/4, W/4]``."""
        mask_features = self.pixel_decoder(features)
        embeddings, masks = self.predictor(features[self.transformer_in_feature], mask_features)
        return mask_features, embeddings, masks


@dataclass
class ProposalOutputs:
    """The proposal network's outputs for a batch.

    Attributes:
        images: the normalised, padded batch and the resized sizes.
        features: backbone features by name.
        mask_features: ``[B, mask_dim, Hp/4, Wp/4]``.
        class_embeddings: ``[B, Q, D]`` (unnormalised).
        mask_preds: ``[B, Q, Hp/4, Wp/4]`` mask logits.
    """

    images: ImageList
    features: dict[str, torch.Tensor]
    mask_features: torch.Tensor
    class_embeddings: torch.Tensor
    mask_preds: torch.Tensor


@dataclass
class ImageClassification:
    """How one image's proposals were classified (all at the resized size).

    Attributes:
        text_features: ``[C + 1, D]`` (last row: no object).
        pred_logits: ``[Q, C + 1]`` MaskFormer logits (100 x cosine).
        mask_probs: ``[Q, Hr, Wr]`` sigmoid of the mask logits.
        regions: the CLIP region batch of the valid proposals (None without CLIP ensemble).
        clip_logits: ``[K, C + 1]`` CLIP logits of the valid proposals (None likewise).
        class_scores: ``[Q, C]`` (ensemble) or ``[K, C]`` (CLIP only / demo selection).
        masks: ``[Q or K, Hr, Wr]`` the masks ``class_scores`` weights (demo: binary).
    """

    text_features: torch.Tensor
    pred_logits: torch.Tensor
    mask_probs: torch.Tensor
    regions: RegionBatch | None
    clip_logits: torch.Tensor | None
    class_scores: torch.Tensor
    masks: torch.Tensor


def build_clip_model(state_or_name: dict[str, torch.Tensor] | str) -> CLIP:
    """An OpenAI-package CLIP (random weights, fp32) with a named geometry or the geometry
    inferred from an OpenAI-format state dict."""
    from ovss_ovseg.clip_adapter import clip_geometry

    if isinstance(state_or_name, str):
        if state_or_name not in CLIP_GEOMETRIES:
            raise ValueError(
                f"CLIP_MODEL_NAME {state_or_name!r} is not one of {', '.join(CLIP_GEOMETRIES)} "
                "and no checkpoint gives its geometry"
            )
        geometry = CLIP_GEOMETRIES[state_or_name]
    else:
        geometry = clip_geometry(state_or_name)
    return CLIP(**geometry).float()


class OVSeg(nn.Module):
    """OVSeg for open-vocabulary semantic segmentation (inference)."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: MaskFormerHead,
        clip_adapter: ClipAdapter,
        size_divisibility: int,
        clip_ensemble: bool,
        clip_ensemble_weight: float,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.clip_adapter = clip_adapter
        self.size_divisibility = size_divisibility
        self.clip_ensemble = clip_ensemble
        self.clip_ensemble_weight = clip_ensemble_weight
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg: CfgNode, clip_state: dict[str, torch.Tensor] | None = None) -> dict:
        """``clip_state``: the OpenAI-format CLIP weights whose shapes give the CLIP geometry
        (the checkpoint's ``clip_adapter.clip_model.*``); without it, the config's
        ``CLIP_MODEL_NAME`` must be a known OpenAI model."""
        backbone = build_backbone(cfg)
        shapes = {
            name: shape
            for name, shape in backbone.output_shape().items()
            if name in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        }
        head_cfg, former = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
        if former.TRANSFORMER_IN_FEATURE not in shapes:
            raise ValueError(
                f"TRANSFORMER_IN_FEATURE {former.TRANSFORMER_IN_FEATURE!r} is not a backbone output"
            )
        pixel_decoder = BasePixelDecoder(
            shapes, head_cfg.CONVS_DIM, head_cfg.MASK_DIM, head_cfg.NORM
        )
        predictor = OpenVocabTransformerPredictor(
            in_channels=shapes[former.TRANSFORMER_IN_FEATURE].channels,
            hidden_dim=former.HIDDEN_DIM,
            num_queries=former.NUM_OBJECT_QUERIES,
            nheads=former.NHEADS,
            dim_feedforward=former.DIM_FEEDFORWARD,
            dec_layers=former.DEC_LAYERS,
            mask_dim=head_cfg.MASK_DIM,
            embedding_dim=head_cfg.EMBEDDING_DIM,
            embed_hidden_dim=head_cfg.EMBED_HIDDEN_DIM,
            embed_layers=head_cfg.EMBED_LAYERS,
            enforce_input_project=former.ENFORCE_INPUT_PROJ,
        )
        adapter = cfg.MODEL.CLIP_ADAPTER
        clip_model = build_clip_model(
            clip_state if clip_state is not None else adapter.CLIP_MODEL_NAME
        )
        return {
            "backbone": backbone,
            "sem_seg_head": MaskFormerHead(pixel_decoder, predictor, former.TRANSFORMER_IN_FEATURE),
            "clip_adapter": ClipAdapter(
                clip_model,
                mask_prompt_depth=adapter.MASK_PROMPT_DEPTH,
                mask_prompt_fwd=adapter.MASK_PROMPT_FWD,
                mask_thr=adapter.MASK_THR,
                mask_expand_ratio=adapter.MASK_EXPAND_RATIO,
                mask_fill=adapter.MASK_FILL,
            ),
            "size_divisibility": former.SIZE_DIVISIBILITY,
            "clip_ensemble": adapter.CLIP_ENSEMBLE,
            "clip_ensemble_weight": adapter.CLIP_ENSEMBLE_WEIGHT,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clip_adapter.clip_model.text_projection.dtype

    def preprocess(self, images: list[torch.Tensor]) -> ImageList:
        """``[3, H, W]`` RGB 0-255 images -> normalised batch, zero-padded to the divisibility."""
        return normalised_batch(
            images, self.pixel_mean, self.pixel_std, self.dtype, self.size_divisibility
        )

    def propose(self, images: ImageList) -> ProposalOutputs:
        """Backbone, pixel decoder and query decoder on a preprocessed batch."""
        features = self.backbone(images.tensor)
        mask_features, embeddings, masks = self.sem_seg_head(features)
        return ProposalOutputs(images, features, mask_features, embeddings, masks)

    def _mask_probs(self, proposals: ProposalOutputs, index: int) -> torch.Tensor:
        """``[Q, Hr, Wr]``: mask logits upsampled to the padded size, cropped, sigmoid."""
        h, w = proposals.images.image_sizes[index]
        masks = F.interpolate(
            proposals.mask_preds[index : index + 1].float(),
            size=proposals.images.tensor.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )[0]
        return masks[:, :h, :w].sigmoid()

    def _clip_scores(
        self, image: torch.Tensor, mask_probs: torch.Tensor, text_features: torch.Tensor
    ) -> tuple[RegionBatch, torch.Tensor]:
        regions = self.clip_adapter.regions(image, mask_probs)
        features = self.clip_adapter.region_features(regions)
        return regions, (TEMPERATURE * features @ text_features.T).float()

    def classify(
        self,
        proposals: ProposalOutputs,
        index: int,
        image: torch.Tensor,
        vocabulary: list[str],
        demo: bool = False,
        selectable: int | None = None,
    ) -> ImageClassification:
        """Class scores and masks of image ``index`` (``image``: its resized ``[3, Hr, Wr]``
        0-255 tensor) for ``vocabulary``.

        Eval: ``mask_cls^(1-w) * clip_cls^w`` per proposal; a proposal without valid pixels
        keeps ``mask_cls^(1-w)``; with ``w = 0`` only the valid proposals, CLIP scores alone.
        Demo: CLIP scores of the valid proposals; per class, only the row of its best region
        is kept, over that region's binary mask; only the first ``selectable`` classes select
        a region (the demo's auto-appended "others" does not).
        """
        text_features = self.clip_adapter.text_features(vocabulary)
        embeddings = F.normalize(proposals.class_embeddings[index], dim=-1)
        pred_logits = (TEMPERATURE * embeddings @ text_features.T).float()
        mask_cls = F.softmax(pred_logits, dim=-1)[:, :-1]
        mask_probs = self._mask_probs(proposals, index)
        if not self.clip_ensemble and not demo:
            return ImageClassification(
                text_features, pred_logits, mask_probs, None, None, mask_cls, mask_probs
            )
        regions, clip_logits = self._clip_scores(image, mask_probs, text_features)
        clip_cls = F.softmax(clip_logits[:, :-1], dim=-1)
        weight = self.clip_ensemble_weight
        if demo:
            masks = (mask_probs[regions.valid] > self.clip_adapter.mask_thr).float()
            selected = torch.zeros_like(clip_cls)
            if clip_cls.shape[0]:
                for row in clip_cls[:, :selectable].argmax(dim=0).tolist():
                    selected[row] = clip_cls[row]
            scores = selected
        elif weight > 0:
            clip_rows = torch.ones_like(mask_cls)
            clip_rows[regions.valid] = clip_cls
            scores = mask_cls.pow(1 - weight) * clip_rows.pow(weight)
            masks = mask_probs
        else:
            scores, masks = clip_cls, mask_probs[regions.valid]
        return ImageClassification(
            text_features, pred_logits, mask_probs, regions, clip_logits, scores, masks
        )

    @staticmethod
    def combine(classification: ImageClassification) -> torch.Tensor:
        """``[C, Hr, Wr]`` = sum over proposals of class score x mask."""
        return torch.einsum("qc,qhw->chw", classification.class_scores, classification.masks)
