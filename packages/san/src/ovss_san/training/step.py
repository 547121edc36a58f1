"""One optimisation step of SAN's recipe: forward in training mode, losses, backward, clip,
AdamW, schedule."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from detectron2.config import CfgNode
from detectron2.structures import ImageList
from torch import nn

from ovss_san.san import SAN, MaskPredictions
from ovss_san.training.criterion import CriterionResult, LossWeights, SetCriterion
from ovss_san.training.matcher import Target
from ovss_san.training.optim import build_lr_scheduler, build_optimizer, clip_gradients
from ovss_san.training.points import PointSource

if TYPE_CHECKING:
    from ovss_san.training.mapper import TrainSample

#: Mixed-precision modes on CUDA.
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class SupervisedForward(nn.Module):
    """SAN's training forward as a module (what DistributedDataParallel wraps)."""

    def __init__(self, model: SAN) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor, image_sizes: list[tuple[int, int]], vocabulary: list[str]
    ) -> list[MaskPredictions]:
        """``images`` ``[B, 3, H, W]`` normalised and padded -> the deep-supervision outputs."""
        return self.model.supervised_outputs(ImageList(images, image_sizes), vocabulary)


@dataclass
class StepResult:
    """What one step computed.

    Attributes:
        outputs: the deep-supervision outputs (ascending blocks; the last is the main one).
        criterion: raw loss terms and matches.
        weighted: each term times its weight.
        total: the sum of the weighted terms (what is back-propagated).
        lr: the learning rate of the first parameter group during the step.
    """

    outputs: list[MaskPredictions]
    criterion: CriterionResult
    weighted: dict[str, torch.Tensor]
    total: torch.Tensor
    lr: float


class TrainingStep:
    """The model, its criterion, optimiser and schedule, and how a batch goes through them.

    Args:
        model: a SAN (its trainable parameters are the ones its builder left trainable).
        cfg: the training config (``SOLVER.*``, ``MODEL.SAN.*`` loss keys).
        classes: the vocabulary the labels index (``gt_classes`` values are indices into it).
        amp: ``fp16`` or ``bf16`` autocast on CUDA, or None for fp32.
        wrap: turns the forward module into what runs it (DistributedDataParallel), or None.
    """

    def __init__(
        self,
        model: SAN,
        cfg: CfgNode,
        classes: list[str],
        amp: str | None = None,
        wrap=None,
    ) -> None:
        san = cfg.MODEL.SAN
        self.model = model
        self.cfg = cfg
        self.classes = list(classes)
        self.criterion = SetCriterion(
            num_classes=len(self.classes),
            weights=LossWeights(
                ce=san.CLASS_WEIGHT,
                mask=san.MASK_WEIGHT,
                dice=san.DICE_WEIGHT,
                no_object=san.NO_OBJECT_WEIGHT,
            ),
            num_points=san.TRAIN_NUM_POINTS,
            oversample_ratio=san.OVERSAMPLE_RATIO,
            importance_ratio=san.IMPORTANCE_SAMPLE_RATIO,
        )
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg)
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)} (got {amp!r})")
        self.amp = amp if model.device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        forward = SupervisedForward(model)
        self.forward = wrap(forward) if wrap is not None else forward

    def targets(self, batch: list[TrainSample], padded: tuple[int, int]) -> list[Target]:
        """Ground truth on the padded batch grid ``padded`` (masks zero-padded)."""
        device = self.model.device
        targets = []
        for sample in batch:
            masks = sample.gt_masks.to(device)
            k, h, w = masks.shape
            grid = torch.zeros((k, *padded), dtype=masks.dtype, device=device)
            grid[:, :h, :w] = masks
            targets.append(Target(labels=sample.gt_classes.to(device), masks=grid))
        return targets

    def autocast(self):
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=AMP_DTYPES[self.amp])

    def backward(self, batch: list[TrainSample], points: PointSource) -> StepResult:
        """Forward in training mode, the losses, and their gradients (not yet clipped)."""
        self.model.train()
        images = self.model.preprocess([sample.image.to(self.model.device) for sample in batch])
        targets = self.targets(batch, tuple(images.tensor.shape[-2:]))
        with self.autocast():
            outputs = self.forward(images.tensor, images.image_sizes, self.classes)
        result = self.criterion(outputs, targets, points)
        weighted = self.criterion.weighted(result.losses)
        total = sum(weighted.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        return StepResult(
            outputs=outputs,
            criterion=result,
            weighted=weighted,
            total=total.detach(),
            lr=self.optimizer.param_groups[0]["lr"],
        )

    def apply(self) -> float | None:
        """Clip the gradients over the whole model, update, advance the schedule; returns the
        gradient norm before clipping (None when clipping is off)."""
        self.scaler.unscale_(self.optimizer)
        norm = clip_gradients(self.optimizer, self.cfg)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return None if norm is None else float(norm)

    def run(self, batch: list[TrainSample], points: PointSource) -> tuple[StepResult, float | None]:
        """One full step: ``backward`` then ``apply``."""
        result = self.backward(batch, points)
        return result, self.apply()
