"""SAN's training losses: class cross-entropy and point-sampled mask BCE and dice on the
Hungarian-matched pairs, for the main output and every auxiliary (deep-supervision) output."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch.nn import functional as F

from ovss_san.san import MaskPredictions
from ovss_san.training.matcher import HungarianMatcher, Match, Target
from ovss_san.training.points import PointSource, point_sample

#: The loss terms of one output, in the order the criterion computes them.
TERMS = ("loss_ce", "loss_mask", "loss_dice")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (also the matching cost weights) and of the no-object class."""

    ce: float
    mask: float
    dice: float
    no_object: float

    def of(self, term: str) -> float:
        """The weight of a term name such as ``loss_mask`` or ``loss_mask_0``."""
        base = term if term in TERMS else term.rsplit("_", 1)[0]
        return {"loss_ce": self.ce, "loss_mask": self.mask, "loss_dice": self.dice}[base]


@dataclass
class CriterionResult:
    """Raw loss terms (``loss_ce``, ``loss_mask``, ``loss_dice`` for the main output, then
    ``_0``, ``_1``, ... for the auxiliary ones) and each output's matches (main first)."""

    losses: dict[str, torch.Tensor]
    matches: list[list[Match]]


def num_masks_across_processes(targets: list[Target], device: torch.device) -> float:
    """The loss normaliser: ground-truth masks per process, averaged over all processes
    (at least 1)."""
    count = torch.tensor([float(sum(len(t.labels) for t in targets))], device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        world = dist.get_world_size()
    return max(count.item() / world, 1.0)


class SetCriterion:
    """Matches each output's masks to the ground truth and computes its losses.

    Args:
        num_classes: the vocabulary size; logits have ``num_classes + 1`` columns (the last is
            no-object / background).
        weights: loss weights (the matcher uses the same ones).
        num_points: points per mask in the matcher and the mask losses.
        oversample_ratio: candidates drawn per point for importance sampling.
        importance_ratio: share of the points chosen by uncertainty.
    """

    def __init__(
        self,
        num_classes: int,
        weights: LossWeights,
        num_points: int,
        oversample_ratio: float,
        importance_ratio: float,
    ) -> None:
        self.num_classes = num_classes
        self.weights = weights
        self.matcher = HungarianMatcher(weights.ce, weights.mask, weights.dice, num_points)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio

    def class_weights(self, device: torch.device) -> torch.Tensor:
        """``[C + 1]``: 1 for every class, the no-object weight for the last."""
        weights = torch.ones(self.num_classes + 1, device=device)
        weights[-1] = self.weights.no_object
        return weights

    def loss_ce(self, mask_logits: torch.Tensor, targets: list[Target], matches: list[Match]):
        """Cross-entropy of all ``[B, Q]`` queries: matched ones against their class, the
        rest against no-object, weighted by class."""
        logits = mask_logits.float()
        classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device
        )
        for image, (target, match) in enumerate(zip(targets, matches, strict=True)):
            classes[image, match.pred.to(logits.device)] = target.labels[match.gt]
        return F.cross_entropy(logits.transpose(1, 2), classes, self.class_weights(logits.device))

    def loss_masks(
        self,
        mask_preds: torch.Tensor,
        targets: list[Target],
        matches: list[Match],
        num_masks: float,
        points: PointSource,
        output: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean BCE and dice of each matched pair at importance-sampled points, summed over
        pairs and divided by ``num_masks``."""
        logits, labels = [], []
        for image, (target, match) in enumerate(zip(targets, matches, strict=True)):
            if len(match.pred) == 0:
                continue
            sources = mask_preds[image, match.pred.to(mask_preds.device)][:, None]
            truth = target.masks[match.gt.to(target.masks.device)][:, None].to(sources.dtype)
            with torch.no_grad():
                where = points.criterion_points(
                    output,
                    image,
                    sources,
                    self.num_points,
                    self.oversample_ratio,
                    self.importance_ratio,
                )
                labels.append(point_sample(truth, where)[:, 0])
            logits.append(point_sample(sources, where)[:, 0])
        if not logits:
            zero = mask_preds.sum() * 0.0
            return zero, zero
        point_logits = torch.cat(logits)
        point_labels = torch.cat(labels)
        bce = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
        loss_mask = bce.mean(1).sum() / num_masks
        probs = point_logits.sigmoid()
        overlap = 2 * (probs * point_labels).sum(-1)
        total = probs.sum(-1) + point_labels.sum(-1)
        loss_dice = (1 - (overlap + 1) / (total + 1)).sum() / num_masks
        return loss_mask, loss_dice

    def __call__(
        self, outputs: list[MaskPredictions], targets: list[Target], points: PointSource
    ) -> CriterionResult:
        """Losses of ``outputs`` (ascending deep-supervision blocks; the last is the main
        output). The main output is matched and scored first, then the auxiliary ones in
        order, each drawing its points from ``points`` in that order."""
        num_masks = num_masks_across_processes(targets, outputs[-1].mask_preds.device)
        ordered = [outputs[-1], *outputs[:-1]]
        losses: dict[str, torch.Tensor] = {}
        all_matches = []
        for output, prediction in enumerate(ordered):
            matches = self.matcher(
                prediction.mask_logits, prediction.mask_preds, targets, points, output
            )
            loss_ce = self.loss_ce(prediction.mask_logits, targets, matches)
            loss_mask, loss_dice = self.loss_masks(
                prediction.mask_preds, targets, matches, num_masks, points, output
            )
            suffix = "" if output == 0 else f"_{output - 1}"
            for term, value in zip(TERMS, (loss_ce, loss_mask, loss_dice), strict=True):
                losses[term + suffix] = value
            all_matches.append(matches)
        return CriterionResult(losses=losses, matches=all_matches)

    def weighted(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each term times its weight."""
        return {term: value * self.weights.of(term) for term, value in losses.items()}
