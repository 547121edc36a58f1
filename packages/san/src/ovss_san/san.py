"""SAN meta-architecture: preprocess -> CLIP + side adapter -> recognition -> scores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F

from ovss_common.torch_layers import normalised_batch
from ovss_san.classifier import OpenVocabClassifier, templates
from ovss_san.clip import build_clip
from ovss_san.clip_visual import ClipFeatureExtractor, ClipFeatures, RecognitionHead
from ovss_san.mask_decoder import MLPMaskDecoder
from ovss_san.side_adapter import AddFusion, SideAdapterNetwork, build_side_vit, parse_fusion_map

#: CLIP's image normalisation, on 0-255 RGB.
CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.32316305)
#: Masks upsampled at once in post-processing.
MASK_CHUNK = 16


@dataclass
class SanOutputs:
    """What one forward pass computes for a batch (last deep-supervision output).

    Attributes:
        images: the normalised, padded batch and the resized sizes.
        clip_input: ``[B, 3, H', W']`` the downscaled CLIP input.
        clip_features: CLIP tokens (the indices the model reads).
        mask_preds: ``[B, Q, H/p, W/p]`` mask logits on the side grid.
        attn_biases: ``[B, heads, Q, H/p, W/p]`` attention biases (one per bias layer).
        mask_embeddings: ``[B, Q, D]`` L2-normalised mask embeddings.
        class_weights: ``[C + 1, D]`` normalised class weights (last row: background).
        mask_logits: ``[B, Q, C + 1]`` class logits of each mask.
    """

    images: ImageList
    clip_input: torch.Tensor
    clip_features: ClipFeatures
    mask_preds: torch.Tensor
    attn_biases: list[torch.Tensor]
    mask_embeddings: torch.Tensor
    class_weights: torch.Tensor
    mask_logits: torch.Tensor


@dataclass
class MaskPredictions:
    """One deep-supervision output of a training forward pass.

    Attributes:
        mask_logits: ``[B, Q, C + 1]`` class logits of each mask (last column: background).
        mask_preds: ``[B, Q, H/p, W/p]`` mask logits on the side grid.
    """

    mask_logits: torch.Tensor
    mask_preds: torch.Tensor


def _check_supported(cfg: CfgNode) -> None:
    """Fail on config values that select code paths no released SAN model uses."""
    san = cfg.MODEL.SAN
    unsupported = {
        "MODEL.SAN.REC_CROSS_ATTN": (san.REC_CROSS_ATTN, False),
        "MODEL.SAN.SOS_TOKEN_FORMAT": (san.SOS_TOKEN_FORMAT, "cls_token"),
        "MODEL.SIDE_ADAPTER.NAME": (cfg.MODEL.SIDE_ADAPTER.NAME, "RegionwiseSideAdapterNetwork"),
        "MODEL.SIDE_ADAPTER.FUSION_TYPE": (cfg.MODEL.SIDE_ADAPTER.FUSION_TYPE, "add"),
    }
    for key, (value, supported) in unsupported.items():
        if value != supported:
            raise ValueError(f"{key} = {value!r} is not supported (only {supported!r})")


def freeze_except(module: nn.Module, exclude: list[str]) -> None:
    """SAN's training freeze of a CLIP part: every parameter of ``module`` whose name contains
    none of the ``exclude`` substrings stops requiring gradients (``"all"`` in ``exclude``
    freezes nothing). Config keys ``MODEL.SAN.CLIP_FROZEN_EXCLUDE`` (the feature extractor)
    and ``CLIP_DEEPER_FROZEN_EXCLUDE`` (the recognition head), as the original builds its
    CLIP parts."""
    if "all" in exclude:
        return
    for name, parameter in module.named_parameters():
        if not any(part in name for part in exclude):
            parameter.requires_grad_(False)


class SAN(nn.Module):
    """Side Adapter Network for open-vocabulary semantic segmentation.

    Submodule names and parameter names are those of the released checkpoints. The parameters
    SAN's training kept frozen (CLIP but for the extractor's positional embedding and the
    classifier's background embedding) have ``requires_grad`` off, as in the original.
    """

    @configurable
    def __init__(
        self,
        *,
        clip_visual_extractor: ClipFeatureExtractor,
        clip_rec_head: RecognitionHead,
        side_adapter_network: SideAdapterNetwork,
        ov_classifier: OpenVocabClassifier,
        size_divisibility: int,
        asymetric_input: bool,
        clip_resolution: float,
        sem_seg_postprocess_before_inference: bool,
    ) -> None:
        super().__init__()
        self.clip_visual_extractor = clip_visual_extractor
        self.clip_rec_head = clip_rec_head
        self.side_adapter_network = side_adapter_network
        self.ov_classifier = ov_classifier
        self.size_divisibility = size_divisibility
        self.asymetric_input = asymetric_input
        self.clip_resolution = clip_resolution
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(CLIP_PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(CLIP_PIXEL_STD).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg: CfgNode, config_dir: Path | None = None) -> dict:
        _check_supported(cfg)
        san, side = cfg.MODEL.SAN, cfg.MODEL.SIDE_ADAPTER
        clip = build_clip(san.CLIP_MODEL_NAME, san.CLIP_PRETRAINED_NAME, config_dir)
        fusion_map = parse_fusion_map(list(side.FUSION_MAP))
        last = san.FEATURE_LAST_LAYER_IDX
        depth = len(clip.visual.transformer.resblocks)
        if not 0 < last < depth or max(fusion_map.values()) > last:
            raise ValueError(
                f"FEATURE_LAST_LAYER_IDX {last} / FUSION_MAP {list(side.FUSION_MAP)} do not fit "
                f"a CLIP with {depth} blocks"
            )
        extractor = ClipFeatureExtractor(clip.visual, last, keep={*fusion_map.values(), last})
        freeze_except(extractor, list(san.CLIP_FROZEN_EXCLUDE))
        rec_head = RecognitionHead(clip.visual, last, side.NUM_QUERIES, san.REC_DOWNSAMPLE_METHOD)
        freeze_except(rec_head, list(san.CLIP_DEEPER_FROZEN_EXCLUDE))
        vit = build_side_vit(side.VIT_NAME, side.IMAGE_SIZE, side.DROP_PATH_RATE)
        supervised = list(side.DEEP_SUPERVISION_IDXS)
        if not supervised or not all(1 <= block <= len(vit.blocks) for block in supervised):
            raise ValueError(
                f"DEEP_SUPERVISION_IDXS {supervised} must name side blocks 1..{len(vit.blocks)}"
            )
        if side.ATTN_BIAS.NUM_HEADS not in (1, rec_head.num_heads):
            raise ValueError(
                f"ATTN_BIAS.NUM_HEADS {side.ATTN_BIAS.NUM_HEADS} must be 1 or the CLIP's "
                f"{rec_head.num_heads} heads"
            )
        decoder = MLPMaskDecoder(
            in_channels=vit.embed_dim,
            num_heads=side.ATTN_BIAS.NUM_HEADS,
            num_layers=side.ATTN_BIAS.NUM_LAYERS,
            embed_channels=side.ATTN_BIAS.EMBED_CHANNELS,
            mlp_channels=side.ATTN_BIAS.MLP_CHANNELS,
            mlp_num_layers=side.ATTN_BIAS.MLP_NUM_LAYERS,
            rescale_attn_bias=side.ATTN_BIAS.RESCALE_ATTN_BIAS,
        )
        fusion_layers = nn.ModuleDict(
            {f"layer_{block}": AddFusion(extractor.width, vit.embed_dim) for block in fusion_map}
        )
        side_adapter = SideAdapterNetwork(
            vit,
            fusion_layers,
            fusion_map,
            decoder,
            side.NUM_QUERIES,
            output_blocks=tuple(side.DEEP_SUPERVISION_IDXS),
        )
        return {
            "clip_visual_extractor": extractor,
            "clip_rec_head": rec_head,
            "side_adapter_network": side_adapter,
            "ov_classifier": OpenVocabClassifier(clip, templates(san.CLIP_TEMPLATE_SET)),
            "size_divisibility": san.SIZE_DIVISIBILITY,
            "asymetric_input": san.ASYMETRIC_INPUT,
            "clip_resolution": san.CLIP_RESOLUTION,
            "sem_seg_postprocess_before_inference": san.SEM_SEG_POSTPROCESS_BEFORE_INFERENCE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.clip_visual_extractor.conv1.weight.dtype

    def preprocess(self, images: list[torch.Tensor]) -> ImageList:
        """``[3, H, W]`` RGB 0-255 images -> normalised batch, zero-padded to the divisibility."""
        return normalised_batch(
            images, self.pixel_mean, self.pixel_std, self.dtype, self.size_divisibility
        )

    def clip_input(self, images: ImageList) -> torch.Tensor:
        """``[B, 3, H', W']``: the batch as the CLIP branch sees it (downscaled if asymmetric)."""
        if not self.asymetric_input:
            return images.tensor
        return F.interpolate(
            images.tensor, scale_factor=self.clip_resolution, mode="bilinear", align_corners=False
        )

    def supervised_outputs(self, images: ImageList, vocabulary: list[str]) -> list[MaskPredictions]:
        """The training forward pass: one output per deep-supervision block, in ascending
        block order (the last is the main output, the others are auxiliary)."""
        class_weights = self.ov_classifier(vocabulary)
        scaled_weights = self.ov_classifier.logit_scale.exp() * class_weights
        clip_features = self.clip_visual_extractor(self.clip_input(images))
        side = self.side_adapter_network
        outputs = []
        for mask_preds, attn_biases in side.decode(
            images.tensor, clip_features, side.output_blocks
        ):
            mask_embeddings = self.clip_rec_head(clip_features, attn_biases)
            mask_logits = torch.einsum("bqc,nc->bqn", mask_embeddings, scaled_weights)
            outputs.append(MaskPredictions(mask_logits=mask_logits, mask_preds=mask_preds))
        return outputs

    def run(self, images: ImageList, vocabulary: list[str]) -> SanOutputs:
        """The network on a preprocessed batch, for one vocabulary (last output only)."""
        class_weights = self.ov_classifier(vocabulary)
        clip_input = self.clip_input(images)
        clip_features = self.clip_visual_extractor(clip_input)
        mask_preds, attn_biases = self.side_adapter_network(images.tensor, clip_features)
        mask_embeddings = self.clip_rec_head(clip_features, attn_biases)
        scale = self.ov_classifier.logit_scale.exp()
        mask_logits = torch.einsum("bqc,nc->bqn", mask_embeddings, scale * class_weights)
        return SanOutputs(
            images=images,
            clip_input=clip_input,
            clip_features=clip_features,
            mask_preds=mask_preds,
            attn_biases=attn_biases,
            mask_embeddings=mask_embeddings,
            class_weights=class_weights,
            mask_logits=mask_logits,
        )

    def iter_scores(
        self,
        outputs: SanOutputs,
        index: int,
        output_size: tuple[int, int],
        chunk: int | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Image ``index``'s float32 scores at ``output_size``, ``chunk`` classes at a time:
        yields ``(first class, [c, H0, W0])``.

        Masks are upsampled to the padded size, then (as configured, before or after the
        class combination) cropped to the resized size and resized to ``output_size``;
        ``MASK_CHUNK`` masks at a time, so that no ``[Q, Hp, Wp]`` tensor is held whole.
        """
        padded = outputs.images.tensor.shape[-2:]
        resized = outputs.images.image_sizes[index]
        logits = outputs.mask_logits[index].float()
        mask_preds = outputs.mask_preds[index].float()
        parts = []
        for first in range(0, mask_preds.shape[0], MASK_CHUNK):
            masks = F.interpolate(
                mask_preds[None, first : first + MASK_CHUNK],
                size=padded,
                mode="bilinear",
                align_corners=False,
            )[0]
            if self.sem_seg_postprocess_before_inference:
                masks = sem_seg_postprocess(masks, resized, *output_size)
            parts.append(masks.sigmoid_())
        masks = torch.cat(parts) if len(parts) > 1 else parts[0]
        classes = logits.shape[1] - 1
        step = chunk or classes
        class_probs = F.softmax(logits, dim=-1)[:, :-1]
        for first in range(0, classes, step):
            scores = torch.einsum("qc,qhw->chw", class_probs[:, first : first + step], masks)
            if not self.sem_seg_postprocess_before_inference:
                scores = sem_seg_postprocess(scores, resized, *output_size)
            yield first, scores
