"""Point sampling for the mask losses: where masks are read, and where the random points come from.

SAN's matcher and criterion compare masks at a few thousand points instead of every pixel
(Mask2Former's recipe): the matcher at uniform random points, the criterion at points chosen
by importance sampling (the most uncertain of an over-sampled uniform set, plus a uniform
tail). Points are ``(x, y)`` in ``[0, 1]^2``.

The random draws come from a ``PointSource``. ``SeededPoints`` gives every image of a batch
its own generator, so that a sample's points do not depend on how the batch is split over
processes; a test can substitute a source that replays recorded points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch.nn import functional as F


def point_sample(values: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear reads of ``values`` ``[N, C, H, W]`` at ``points`` ``[N, P, 2]`` (``(x, y)`` in
    ``[0, 1]``, pixel centres at ``(i + 0.5) / size``, zero outside) -> ``[N, C, P]`` float32.

    The reads are made in float32 whatever the inputs' precision, as autocast runs
    ``grid_sample`` in the original's mixed-precision training."""
    grid = 2.0 * points[:, :, None, :].float() - 1.0
    return F.grid_sample(values.float(), grid, align_corners=False)[..., 0]


def uncertainty(mask_logits: torch.Tensor) -> torch.Tensor:
    """How unsure a mask logit is: ``-|logit|`` (largest at the decision boundary)."""
    return -mask_logits.abs()


def most_uncertain(mask_logits: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` most uncertain of ``candidates`` ``[N, M, 2]`` for masks ``[N, 1, h, w]``
    -> ``[N, count, 2]``, most uncertain first (``torch.topk`` order)."""
    scores = uncertainty(point_sample(mask_logits, candidates))[:, 0]
    chosen = torch.topk(scores, k=count, dim=1).indices
    return torch.gather(candidates, 1, chosen[..., None].expand(-1, -1, 2))


class PointSource(Protocol):
    """Where the matcher's and the criterion's points come from, per image of the batch.

    ``output`` counts the deep-supervision outputs in the order the criterion visits them
    (the main output first, then the auxiliary ones).
    """

    def matcher_points(
        self, output: int, image: int, count: int, device: torch.device
    ) -> torch.Tensor:
        """``[1, count, 2]`` points shared by every mask of ``image``."""
        ...

    def criterion_points(
        self,
        output: int,
        image: int,
        mask_logits: torch.Tensor,
        count: int,
        oversample_ratio: float,
        importance_ratio: float,
    ) -> torch.Tensor:
        """``[N, count, 2]`` points for the ``N`` matched masks ``[N, 1, h, w]`` of ``image``."""
        ...


class SeededPoints:
    """Uniform draws from one generator per image, seeded by the caller.

    The criterion draws ``oversample_ratio * count`` uniform candidates per matched mask,
    keeps the ``importance_ratio * count`` most uncertain and adds uniform points up to
    ``count``, as the original does.

    Args:
        seeds: one seed per image of the batch.
        device: where the generators live (the device the masks are on).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.generators = []
        for seed in seeds:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed))
            self.generators.append(generator)

    def _uniform(self, image: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.rand(shape, generator=self.generators[image], device=device)

    def matcher_points(
        self, output: int, image: int, count: int, device: torch.device
    ) -> torch.Tensor:
        return self._uniform(image, (1, count, 2), device)

    def criterion_points(
        self,
        output: int,
        image: int,
        mask_logits: torch.Tensor,
        count: int,
        oversample_ratio: float,
        importance_ratio: float,
    ) -> torch.Tensor:
        masks = mask_logits.shape[0]
        device = mask_logits.device
        candidates = self._uniform(image, (masks, int(count * oversample_ratio), 2), device)
        uncertain = int(importance_ratio * count)
        points = most_uncertain(mask_logits, candidates, uncertain)
        if count > uncertain:
            tail = self._uniform(image, (masks, count - uncertain, 2), device)
            points = torch.cat([points, tail], dim=1)
        return points
