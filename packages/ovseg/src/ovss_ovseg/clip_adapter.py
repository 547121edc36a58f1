"""OVSeg's mask-adapted CLIP: region crops of each proposal, classified by CLIP with mask
prompt tuning, against text embeddings of the vocabulary plus a learned "no object" row.

The CLIP model is the OpenAI ``clip`` package's, built from a state dict's shapes; its image
tower is driven by ``MaskPromptVisionTransformer``, which adds the learned ``mask_embedding``
without modifying the installed package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from clip import tokenize
from clip.model import CLIP
from detectron2.structures import BitMasks
from torch import nn
from torch.nn import functional as F

from ovss_common.clip_geometry import OPENAI_CLIP_GEOMETRIES
from ovss_common.prompts import VILD_TEMPLATES, template_means

#: CLIP's image statistics on 0-255 RGB.
CLIP_MEAN_255 = (122.7709383, 116.7460125, 104.09373615)
CLIP_STD_255 = (68.5005327, 66.6321579, 70.32316305)
#: Side of the square CLIP region input.
REGION_SIZE = 224
#: OVSeg classifies regions with this fixed temperature (not CLIP's ``logit_scale``).
TEMPERATURE = 100.0
#: Geometry of the OpenAI CLIPs of the released models (``clip.model.CLIP`` arguments).
CLIP_GEOMETRIES = OPENAI_CLIP_GEOMETRIES


def clip_geometry(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """``clip.model.CLIP`` arguments inferred from an OpenAI-format ViT state dict (as
    ``clip.model.build_model`` infers them; heads = width // 64)."""
    vision_width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    return dict(
        embed_dim=state["text_projection"].shape[1],
        image_resolution=patch * grid,
        vision_layers=sum(
            1 for k in state if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")
        ),
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        transformer_width=text_width,
        transformer_heads=text_width // 64,
        transformer_layers=len(
            {k.split(".")[2] for k in state if k.startswith("transformer.resblocks")}
        ),
    )


class MaskPromptVisionTransformer(nn.Module):
    """CLIP's ViT with mask prompt tuning.

    Patch tokens outside a region's mask are replaced by learned embeddings: by
    ``mask_embedding[0]`` at the input and by ``mask_embedding[d]`` after block ``d`` for
    ``d < depth``; the class token is never replaced. Without masks it is the plain CLIP ViT.
    """

    def __init__(self, visual: nn.Module, mask_prompt_depth: int) -> None:
        super().__init__()
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.transformer = visual.transformer
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        patch = self.conv1.kernel_size[0]
        grid = visual.input_resolution // patch
        width = self.conv1.out_channels
        self.patch_size = patch
        self.mask_prompt_depth = mask_prompt_depth
        self.mask_embedding = nn.Parameter(torch.zeros(mask_prompt_depth, grid * grid, width))

    def token_masks(self, region_masks: torch.Tensor) -> torch.Tensor:
        """``[K, 1, R, R]`` binary masks -> ``[K, grid*grid, 1]``: 1 where a patch touches the mask."""
        pooled = F.avg_pool2d(region_masks.float(), self.patch_size, self.patch_size)
        return torch.ceil(pooled.flatten(1)[..., None])

    def forward(self, x: torch.Tensor, region_masks: torch.Tensor | None = None) -> torch.Tensor:
        """``[K, 3, R, R]`` normalised regions (and their masks) -> ``[K, D]`` embeddings."""
        x = self.conv1(x).flatten(2).transpose(1, 2)
        keep = prompts = None
        if region_masks is not None:
            keep = self.token_masks(region_masks).to(x.dtype)
            prompts = self.mask_embedding.to(x.dtype).expand(-1, x.shape[1], -1)
            x = x * keep + prompts[0] * (1 - keep)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).transpose(0, 1)
        for depth, block in enumerate(self.transformer.resblocks, start=1):
            x = block(x)
            if keep is not None and depth < self.mask_prompt_depth:
                patches = x[1:] * keep.transpose(0, 1) + prompts[depth][:, None] * (
                    1 - keep.transpose(0, 1)
                )
                x = torch.cat([x[:1], patches])
        return self.ln_post(x[0]) @ self.proj


@dataclass
class RegionBatch:
    """The CLIP inputs of the valid proposals of one image.

    Attributes:
        valid: ``[Q]`` bool, proposals with at least one pixel above the mask threshold.
        boxes: ``[K, 4]`` float (x0, y0, x1 + 1, y1 + 1) of the valid binary masks.
        crop_sizes: ``[K, 2]`` (h, w) of each masked crop.
        regions: ``[K, 3, R, R]`` normalised, bicubic-resized crops (K = valid count).
        region_masks: ``[K, 1, R, R]`` binary masks resized with nearest.
    """

    valid: torch.Tensor
    boxes: torch.Tensor
    crop_sizes: torch.Tensor
    regions: torch.Tensor
    region_masks: torch.Tensor


def crop_box(box: torch.Tensor, expand_ratio: float, height: int, width: int) -> tuple[int, ...]:
    """OVSeg's crop window: the box scaled about its centre, corners truncated to int, clipped."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    w, h = (x1 - x0) * expand_ratio, (y1 - y0) * expand_ratio
    left, top, right, bottom = (int(v) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return max(left, 0), max(top, 0), min(right, width), min(bottom, height)


class ClipAdapter(nn.Module):
    """The CLIP side of OVSeg.

    Args:
        clip_model: an OpenAI ``clip.model.CLIP`` (ViT); its image tower is wrapped for MPT.
        mask_prompt_depth: layers that get mask prompts.
        mask_prompt_fwd: use the region masks when classifying regions.
        mask_thr: probability above which a mask pixel is foreground.
        mask_expand_ratio: crop box scale.
        mask_fill: ``"mean"`` (CLIP mean colour) or ``"zero"`` outside the mask.
    """

    def __init__(
        self,
        clip_model: CLIP,
        *,
        mask_prompt_depth: int,
        mask_prompt_fwd: bool,
        mask_thr: float,
        mask_expand_ratio: float,
        mask_fill: str,
    ) -> None:
        super().__init__()
        clip_model.visual = MaskPromptVisionTransformer(clip_model.visual, mask_prompt_depth)
        self.clip_model = clip_model
        embed_dim = clip_model.text_projection.shape[-1]
        self.non_object_embedding = nn.Parameter(
            torch.randn(1, embed_dim) * clip_model.transformer.width**-0.5
        )
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN_255).reshape(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD_255).reshape(1, 3, 1, 1))
        fills = {"mean": CLIP_MEAN_255, "zero": (0.0, 0.0, 0.0)}
        if mask_fill not in fills:
            raise ValueError(f"MASK_FILL {mask_fill!r} is not one of {', '.join(fills)}")
        self.fill = fills[mask_fill]
        self.mask_prompt_fwd = mask_prompt_fwd
        self.mask_thr = mask_thr
        self.mask_expand_ratio = mask_expand_ratio
        self._cache: dict[str, torch.Tensor] = {}

    def _apply(self, fn: Any, recurse: bool = True) -> nn.Module:
        # Moving or casting the weights makes cached text embeddings stale.
        self._cache.clear()
        return super()._apply(fn, recurse)

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, 77]`` -> ``[N, D]`` L2-normalised text embeddings, run only up to the last
        end-of-text token (the tower is causal)."""
        model = self.clip_model
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        x = model.token_embedding(tokens[:, :length]) + model.positional_embedding[:length]
        x = x.transpose(0, 1)
        mask = model.build_attention_mask()[:length, :length].to(x)
        for block in model.transformer.resblocks:
            attended = block.attn(*(block.ln_1(x),) * 3, need_weights=False, attn_mask=mask)[0]
            x = x + attended
            x = x + block.mlp(block.ln_2(x))
        x = model.ln_final(x.transpose(0, 1))
        pooled = x[torch.arange(x.shape[0], device=x.device), eot] @ model.text_projection
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def class_embeddings(self, names: list[str]) -> torch.Tensor:
        """``[C, D]``: per name, the normalised mean of its 14 normalised template embeddings
        (cached per name)."""
        missing = [name for name in dict.fromkeys(names) if name not in self._cache]
        if missing:
            device = self.clip_model.text_projection.device
            means = template_means(
                missing,
                VILD_TEMPLATES,
                lambda prompts: tokenize(prompts).long().to(device),
                self.encode_tokens,
            )
            self._cache.update(zip(missing, means, strict=True))
        return torch.stack([self._cache[name] for name in names])

    def text_features(self, names: list[str]) -> torch.Tensor:
        """``[C + 1, D]``: the class embeddings, then the normalised no-object embedding."""
        no_object = F.normalize(self.non_object_embedding, dim=-1)
        return torch.cat(
            [self.class_embeddings(names), no_object.to(self.clip_model.text_projection.dtype)]
        )

    def regions(self, image: torch.Tensor, mask_probs: torch.Tensor) -> RegionBatch:
        """Masked crops of ``image`` (``[3, H, W]``, 0-255) for the proposals ``[Q, H, W]``."""
        binary = mask_probs > self.mask_thr
        valid = binary.sum(dim=(-1, -2)) > 0
        binary = binary[valid]
        boxes = BitMasks(binary).get_bounding_boxes().tensor
        _, height, width = image.shape
        image = image.to(mask_probs.dtype)
        fill = torch.tensor(self.fill, dtype=image.dtype, device=image.device)[:, None, None]
        regions, region_masks, sizes = [], [], []
        for box, mask in zip(boxes, binary, strict=True):
            left, top, right, bottom = crop_box(box, self.mask_expand_ratio, height, width)
            m = mask[None, top:bottom, left:right].to(image.dtype)
            crop = image[:, top:bottom, left:right] * m + (1 - m) * fill
            crop = (crop[None] - self.pixel_mean) / self.pixel_std
            regions.append(F.interpolate(crop, size=(REGION_SIZE,) * 2, mode="bicubic"))
            region_masks.append(F.interpolate(m[None], size=(REGION_SIZE,) * 2, mode="nearest"))
            sizes.append((bottom - top, right - left))
        empty = image.new_zeros(0, 3, REGION_SIZE, REGION_SIZE)
        return RegionBatch(
            valid=valid,
            boxes=boxes,
            crop_sizes=torch.tensor(sizes, dtype=torch.long).reshape(-1, 2),
            regions=torch.cat(regions) if regions else empty,
            region_masks=torch.cat(region_masks) if region_masks else empty[:, :1],
        )

    @torch.no_grad()
    def region_features(self, batch: RegionBatch) -> torch.Tensor:
        """``[K, D]`` L2-normalised CLIP embeddings of the regions."""
        dtype = self.clip_model.text_projection.dtype
        masks = batch.region_masks.to(dtype) if self.mask_prompt_fwd else None
        return F.normalize(self.clip_model.visual(batch.regions.to(dtype), masks), dim=-1)
