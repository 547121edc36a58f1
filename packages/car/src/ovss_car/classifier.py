"""CaR's classifier of visually prompted images: a double softmax over templates.

For each template, the prompted images are scored against the vocabulary's texts (softmax of
``logit_scale.exp()`` x cosine); the per-template probabilities are summed and softmaxed
again, giving ``S[i, j]``: prompted image ``i`` (made for class ``i``) against class ``j``.
The image tower does not depend on the template, so each image is encoded once (the original
re-encodes it for every template: the same numbers, 15 times the work).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from clip.model import CLIP
from PIL import Image
from torch.nn import functional as F
from torchvision import transforms

from ovss_car.clip_model import encode_image_tokens
from ovss_car.text import prompt_embeddings

#: CLIP's image statistics on [0, 1] RGB.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def semantic_preprocess(size: int) -> transforms.Compose:
    """CLIP's evaluation transform: bicubic resize of the short side, centre crop, normalise."""
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


@torch.no_grad()
def image_embeddings(model: CLIP, images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, R, R]`` preprocessed images -> ``[N, D]`` L2-normalised class-token embeddings
    (the original's classifier path: all blocks but the last)."""
    tokens, _ = encode_image_tokens(model, images)
    return F.normalize(model.visual.ln_post(tokens[0]) @ model.visual.proj, dim=-1)


@torch.no_grad()
def template_probabilities(
    model: CLIP,
    images: torch.Tensor,
    texts_per_template: list[list[str]],
    embed: Callable[[list[str]], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``[T, N, C]``: per template, softmax over the C texts of each image's scaled cosines.

    ``embed`` maps prompts to normalised text embeddings (default: encode them now).
    """
    embedded = image_embeddings(model, images)
    scale = model.logit_scale.exp()
    embed = embed or (lambda texts: prompt_embeddings(model, texts))
    probabilities = []
    for texts in texts_per_template:
        logits = scale * embedded @ embed(texts).T
        probabilities.append(F.softmax(logits.float(), dim=-1))
    return torch.stack(probabilities)


def combine_templates(probabilities: torch.Tensor) -> torch.Tensor:
    """``[T, N, C]`` -> ``[N, C]``: softmax of the summed per-template probabilities."""
    return F.softmax(probabilities.sum(dim=0), dim=-1)


def preprocess_images(rgbs: list[np.ndarray], size: int) -> torch.Tensor:
    """``[H, W, 3]`` uint8 images -> ``[N, 3, size, size]`` classifier inputs."""
    transform = semantic_preprocess(size)
    return torch.stack([transform(Image.fromarray(rgb)) for rgb in rgbs])
