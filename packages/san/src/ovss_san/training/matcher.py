"""Hungarian matching of predicted masks to ground-truth classes (Mask2Former's matcher, as
SAN trains with it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

from ovss_san.training.points import PointSource, point_sample


@dataclass(frozen=True)
class Target:
    """One image's ground truth: ``labels`` ``[K]`` class ids and ``masks`` ``[K, H, W]``
    binary masks on the padded batch grid."""

    labels: torch.Tensor
    masks: torch.Tensor


@dataclass(frozen=True)
class Match:
    """Which prediction explains which ground truth in one image: ``pred`` and ``gt`` are
    ``[min(Q, K)]`` int64 indices, ``pred`` ascending."""

    pred: torch.Tensor
    gt: torch.Tensor


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[Q, P]`` logits against ``[K, P]`` binary targets -> ``[Q, K]`` mean BCE-with-logits."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    cost = positive @ targets.T + negative @ (1 - targets).T
    return cost / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[Q, P]`` logits against ``[K, P]`` binary targets -> ``[Q, K]`` dice loss (+1 smoothed)."""
    probs = logits.sigmoid()
    overlap = 2 * probs @ targets.T
    total = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (overlap + 1) / (total + 1)


class HungarianMatcher:
    """Assigns each ground-truth mask one prediction, minimising
    ``class_weight * (-p(class)) + mask_weight * BCE + dice_weight * dice`` over ``num_points``
    uniform random points (the same points for every mask of an image).

    Args:
        class_weight, mask_weight, dice_weight: the cost weights (SAN: 2, 5, 5).
        num_points: points per image.
    """

    def __init__(
        self, class_weight: float, mask_weight: float, dice_weight: float, num_points: int
    ) -> None:
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("the matching costs cannot all be 0")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    def cost(
        self,
        mask_logits: torch.Tensor,
        mask_preds: torch.Tensor,
        target: Target,
        points: torch.Tensor,
    ) -> torch.Tensor:
        """``[Q, K]`` matching cost of one image.

        Args:
            mask_logits: ``[Q, C + 1]`` class logits.
            mask_preds: ``[Q, h, w]`` mask logits.
            target: the image's ground truth.
            points: ``[1, P, 2]`` sampling points.
        """
        class_cost = -mask_logits.float().softmax(-1)[:, target.labels]
        sampled_preds = point_sample(
            mask_preds[:, None].float(), points.expand(mask_preds.shape[0], -1, -1)
        )[:, 0]
        sampled_targets = point_sample(
            target.masks[:, None].float(), points.expand(target.masks.shape[0], -1, -1)
        )[:, 0]
        return (
            self.mask_weight * pairwise_sigmoid_ce(sampled_preds, sampled_targets)
            + self.class_weight * class_cost
            + self.dice_weight * pairwise_dice(sampled_preds, sampled_targets)
        )

    @torch.no_grad()
    def __call__(
        self,
        mask_logits: torch.Tensor,
        mask_preds: torch.Tensor,
        targets: list[Target],
        points: PointSource,
        output: int,
    ) -> list[Match]:
        """One ``Match`` per image for ``mask_logits`` ``[B, Q, C + 1]`` and ``mask_preds``
        ``[B, Q, h, w]``; ``output`` names the deep-supervision output for ``points``."""
        matches = []
        for image, target in enumerate(targets):
            where = points.matcher_points(output, image, self.num_points, mask_preds.device)
            cost = self.cost(mask_logits[image], mask_preds[image], target, where)
            pred, gt = linear_sum_assignment(cost.cpu().numpy())
            matches.append(
                Match(
                    pred=torch.as_tensor(pred, dtype=torch.int64),
                    gt=torch.as_tensor(gt, dtype=torch.int64),
                )
            )
        return matches
