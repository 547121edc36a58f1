"""CaR's mask proposals: Grad-CAM on CLIP, refined by CLIP-ES attention affinity.

For each text, the CAM is the Grad-CAM of the text's probability (softmax over the texts and
the background words of the scaled cosine between the mean-pooled patch tokens and the text
embeddings) at the output of the last block's first LayerNorm. CLIP-ES then propagates it with
an affinity built from the head-averaged attention of the last 8 blocks, restricted to the
boxes around the CAM's high region. All maps live on the token grid until the final resize.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from clip.model import CLIP
from PIL import Image
from torch.nn import functional as F
from torchvision import transforms

from ovss_car.classifier import CLIP_MEAN, CLIP_STD
from ovss_car.clip_model import encode_image_tokens

#: The original sizes its CAM input to multiples of 16, whatever the model's patch size.
CAM_STRIDE = 16
#: Normalisation epsilon of the original's min-max scaling.
EPSILON = 1e-15
#: Attention maps (the last ones) averaged into the CLIP-ES affinity.
AFFINITY_LAYERS = 8


def min_max(cam: np.ndarray) -> np.ndarray:
    """Shift to a minimum of 0 and divide by (1e-15 + maximum), in float32."""
    cam = cam - np.min(cam)
    return (cam / (EPSILON + np.max(cam))).astype(np.float32)


def scale_to(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Min-max a ``[h, w]`` map and resize it bilinearly (OpenCV) to ``size`` = (H, W)."""
    return cv2.resize(min_max(cam), (size[1], size[0]))


def cam_input(image: Image.Image) -> torch.Tensor:
    """``[1, 3, H', W']``: the image bicubically resized up to multiples of 16, normalised."""
    height = math.ceil(image.height / CAM_STRIDE) * CAM_STRIDE
    width = math.ceil(image.width / CAM_STRIDE) * CAM_STRIDE
    transform = transforms.Compose(
        [
            transforms.Resize((height, width), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    return transform(image.convert("RGB"))[None]


def box_mask(cam: np.ndarray, threshold: float) -> np.ndarray:
    """``[h, w]`` 0/1 mask of the bounding boxes of the regions above ``threshold`` x max
    (uint8 scale, lowering the threshold by 0.1 until something passes); boxes stop one short
    of the last row and column, as the original's do."""
    height, width = cam.shape
    scores = (cam * 255).astype(np.uint8)
    while True:
        _, binary = cv2.threshold(scores, int(threshold * np.max(scores)), 255, cv2.THRESH_BINARY)
        if binary.max() > 0 or threshold <= 0:
            break
        threshold -= 0.1
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    mask = np.zeros((height, width), np.float32)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        mask[y : min(y + h, height - 1), x : min(x + w, width - 1)] = 1
    return mask


def affinity(attention: torch.Tensor) -> torch.Tensor:
    """CLIP-ES transition matrix ``[L, L]`` from a head-averaged attention map over patches:
    alternating column/row normalisation (3 rounds), symmetrised, squared."""
    trans = attention / attention.sum(dim=0, keepdim=True)
    trans = trans / trans.sum(dim=1, keepdim=True)
    for _ in range(2):
        trans = trans / trans.sum(dim=0, keepdim=True)
        trans = trans / trans.sum(dim=1, keepdim=True)
    trans = (trans + trans.T) / 2
    return trans @ trans


@dataclass
class CamOutputs:
    """One CLIPCAM call.

    Attributes:
        probabilities: ``[1, n + n_bg]`` text probabilities of the pooled patch tokens.
        gradcams: ``[n, h, w]`` min-max Grad-CAMs on the token grid.
        retried: ``[n]`` True where the CAM was all zero and was recomputed against the
            foreground texts only.
        refined: ``[n, h, w]`` CLIP-ES refined maps before normalisation.
        masks: ``[n, H, W]`` refined maps min-maxed and resized to the image.
    """

    probabilities: torch.Tensor
    gradcams: np.ndarray
    retried: np.ndarray
    refined: np.ndarray
    masks: np.ndarray


class ClipCam:
    """Grad-CAM + CLIP-ES on a CLIP image tower.

    Args:
        model: the CAM CLIP (ViT).
        threshold: CLIP-ES box threshold (``car.clipes_threshold``).
        background: ``[n_bg, D]`` normalised background text embeddings, or None.
    """

    def __init__(self, model: CLIP, threshold: float, background: torch.Tensor | None) -> None:
        self.model = model
        self.threshold = threshold
        self.background = background

    def _probabilities(
        self, tokens: torch.Tensor, activation: torch.Tensor, texts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rerun the last block from its first LayerNorm's output; returns probabilities
        ``[1, T]`` and the block's attention ``[1, L, L]``."""
        model = self.model
        block = model.visual.transformer.resblocks[-1]
        attended, attention = block.attn(activation, activation, activation, need_weights=True)
        x = tokens + attended
        x = x + block.mlp(block.ln_2(x))
        pooled = model.visual.ln_post(x.transpose(0, 1))[:, 1:].mean(dim=1) @ model.visual.proj
        pooled = F.normalize(pooled, dim=-1)
        logits = model.logit_scale.exp() * pooled @ F.normalize(texts, dim=-1).T
        return F.softmax(logits.float(), dim=-1), attention

    def _gradcam(
        self, tokens: torch.Tensor, texts: torch.Tensor, index: int, grid: tuple[int, int]
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        block = self.model.visual.transformer.resblocks[-1]
        with torch.enable_grad():
            activation = block.ln_1(tokens).detach().requires_grad_(True)
            probabilities, attention = self._probabilities(tokens, activation, texts)
            (gradient,) = torch.autograd.grad(probabilities[0, index], activation)
        to_grid = lambda t: t[1:, 0].T.reshape(-1, *grid).detach().numpy()  # noqa: E731
        values, grads = to_grid(activation), to_grid(gradient)
        cam = (grads.mean(axis=(1, 2))[:, None, None] * values).sum(axis=0)
        cam = min_max(np.maximum(cam, 0).astype(np.float32))
        return min_max(np.maximum(cam, 0)), probabilities.detach(), attention.detach()

    @torch.no_grad()
    def __call__(self, image: Image.Image, foreground: torch.Tensor) -> CamOutputs:
        """CAM masks of the ``[n, D]`` normalised foreground text embeddings on ``image``."""
        pixels = cam_input(image).to(self.model.visual.conv1.weight.device)
        grid = (pixels.shape[-2] // CAM_STRIDE, pixels.shape[-1] // CAM_STRIDE)
        tokens, attentions = encode_image_tokens(self.model, pixels)
        texts = foreground if self.background is None else torch.cat([foreground, self.background])
        gradcams, retried, refined, masks = [], [], [], []
        probabilities = transition = None
        for index in range(foreground.shape[0]):
            cam, probs, last_attention = self._gradcam(tokens, texts, index, grid)
            if probabilities is None:
                probabilities = probs
                maps = [a[:, 1:, 1:] for a in [*attentions, last_attention]][-AFFINITY_LAYERS:]
                transition = affinity(torch.stack(maps).mean(dim=0)[0].float().cpu())
            retry = cam.max() == 0
            if retry:
                cam, _, _ = self._gradcam(tokens, foreground, index, grid)
            boxes = torch.from_numpy(box_mask(cam, self.threshold)).reshape(1, -1)
            propagated = (transition * boxes) @ torch.from_numpy(cam).reshape(-1, 1)
            grid_map = propagated.reshape(grid).numpy().astype(np.float32)
            gradcams.append(cam)
            retried.append(retry)
            refined.append(grid_map)
            masks.append(scale_to(grid_map, (image.height, image.width)))
        return CamOutputs(
            probabilities=probabilities,
            gradcams=np.stack(gradcams),
            retried=np.array(retried),
            refined=np.stack(refined),
            masks=np.stack(masks),
        )
