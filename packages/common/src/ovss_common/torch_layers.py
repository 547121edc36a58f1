"""Network pieces SAN and OVSeg build the same way (torch is imported inside each function).

- ``mlp_layers`` / ``mlp_forward``: the DETR-style MLP (affine layers, ReLU between them) whose
  parameters are stored as ``layers.<i>.weight`` / ``layers.<i>.bias``;
- ``normalised_batch``: RGB 0-255 images normalised and zero-padded into one detectron2
  ``ImageList``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any


def mlp_layers(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, dense: bool = False
) -> Any:
    """``num_layers`` affine layers ``in -> hidden -> ... -> out`` as an ``nn.ModuleList``:
    ``nn.Linear``, or 1x1 ``nn.Conv2d`` when ``dense``."""
    from torch import nn

    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]

    def layer(i: int, o: int) -> Any:
        return nn.Conv2d(i, o, kernel_size=1) if dense else nn.Linear(i, o)

    return nn.ModuleList(layer(i, o) for i, o in itertools.pairwise(dims))


def mlp_forward(layers: Sequence[Any], x: Any) -> Any:
    """Apply ``layers`` in turn, with a ReLU after every one but the last."""
    from torch.nn import functional as F

    for index, layer in enumerate(layers):
        x = layer(x)
        if index < len(layers) - 1:
            x = F.relu(x)
    return x


def normalised_batch(
    images: Sequence[Any], mean: Any, std: Any, dtype: Any, size_divisibility: int
) -> Any:
    """``[3, H, W]`` RGB 0-255 tensors -> ``(image - mean) / std`` in ``dtype``, on the device of
    ``mean``, zero-padded to a multiple of ``size_divisibility`` (a detectron2 ``ImageList``)."""
    from detectron2.structures import ImageList

    normalised = [((image.to(mean.device) - mean) / std).to(dtype) for image in images]
    return ImageList.from_tensors(normalised, size_divisibility)
