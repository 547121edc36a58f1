"""The optimiser and learning-rate schedule of SAN's recipe.

AdamW over the trainable parameters, one parameter group each (as the original builds them):
the base rate scaled by ``BACKBONE_MULTIPLIER`` for the side adapter and by
``CLIP_MULTIPLIER`` for CLIP modules; weight decay ``WEIGHT_DECAY``, except
``WEIGHT_DECAY_EMBED`` for parameters whose name holds a ``WEIGHT_DECAY_EMBED_GROUP`` word and
for embeddings, and ``WEIGHT_DECAY_NORM`` for normalisation layers. Gradients are clipped over
the whole model before each step. The schedule is detectron2's ``WarmupPolyLR``.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode
from torch import nn

#: Module types whose parameters take ``WEIGHT_DECAY_NORM``.
NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def parameter_groups(model: nn.Module, cfg: CfgNode) -> list[dict[str, Any]]:
    """One group per trainable parameter, with its ``param_name``, ``lr`` and ``weight_decay``,
    in module order."""
    solver = cfg.SOLVER
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            lr = solver.BASE_LR
            if "side_adapter_network" in module_name:
                lr *= solver.BACKBONE_MULTIPLIER
            if "clip" in module_name:
                lr *= solver.CLIP_MULTIPLIER
            weight_decay = solver.WEIGHT_DECAY
            if any(word in name for word in solver.WEIGHT_DECAY_EMBED_GROUP):
                weight_decay = solver.WEIGHT_DECAY_EMBED
            if isinstance(module, NORM_TYPES):
                weight_decay = solver.WEIGHT_DECAY_NORM
            if isinstance(module, nn.Embedding):
                weight_decay = solver.WEIGHT_DECAY_EMBED
            groups.append(
                {
                    "params": [parameter],
                    "param_name": f"{module_name}.{name}" if module_name else name,
                    "lr": lr,
                    "weight_decay": weight_decay,
                }
            )
    return groups


def build_optimizer(model: nn.Module, cfg: CfgNode) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` (``ADAMW`` or ``SGD``) over ``parameter_groups``."""
    groups = parameter_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    kind = cfg.SOLVER.OPTIMIZER
    if kind == "ADAMW":
        return torch.optim.AdamW(groups, cfg.SOLVER.BASE_LR)
    if kind == "SGD":
        return torch.optim.SGD(groups, cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    raise ValueError(f"SOLVER.OPTIMIZER = {kind!r} is not supported (ADAMW or SGD)")


def clip_gradients(optimizer: torch.optim.Optimizer, cfg: CfgNode) -> torch.Tensor | None:
    """Clip the gradients of every parameter together (``CLIP_TYPE full_model``) to the
    configured norm; returns the norm before clipping, or None when clipping is off."""
    clipping = cfg.SOLVER.CLIP_GRADIENTS
    if not clipping.ENABLED or clipping.CLIP_VALUE <= 0:
        return None
    if clipping.CLIP_TYPE != "full_model":
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE = {clipping.CLIP_TYPE!r} is not supported (full_model)"
        )
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.nn.utils.clip_grad_norm_(
        parameters, clipping.CLIP_VALUE, norm_type=clipping.NORM_TYPE
    )


def poly_lr_factor(
    iteration: int,
    max_iter: int,
    power: float,
    warmup_iters: int = 0,
    warmup_factor: float = 1.0,
    warmup_method: str = "linear",
    constant_ending: float = 0.0,
) -> float:
    """The multiplier of the base rate at ``iteration`` (detectron2's ``WarmupPolyLR``):
    ``(1 - iteration / max_iter) ** power`` after a linear or constant warm-up; when
    ``constant_ending`` > 0 the decay stops at that factor once the warm-up is over."""
    warmup = 1.0
    if iteration < warmup_iters:
        if warmup_method == "constant":
            warmup = warmup_factor
        elif warmup_method == "linear":
            alpha = iteration / warmup_iters
            warmup = warmup_factor * (1 - alpha) + alpha
        else:
            raise ValueError(f"unknown warm-up method {warmup_method!r}")
    decay = (1.0 - iteration / max_iter) ** power
    if constant_ending > 0 and warmup == 1.0 and decay < constant_ending:
        return constant_ending
    return warmup * decay


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, cfg: CfgNode
) -> torch.optim.lr_scheduler.LambdaLR:
    """``SOLVER.LR_SCHEDULER_NAME`` ``WarmupPolyLR``, stepped once per iteration."""
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME != "WarmupPolyLR":
        raise ValueError(
            f"SOLVER.LR_SCHEDULER_NAME = {solver.LR_SCHEDULER_NAME!r} is not supported "
            "(WarmupPolyLR)"
        )

    def factor(iteration: int) -> float:
        return poly_lr_factor(
            iteration,
            solver.MAX_ITER,
            solver.POLY_LR_POWER,
            solver.WARMUP_ITERS,
            solver.WARMUP_FACTOR,
            solver.WARMUP_METHOD,
            solver.POLY_LR_CONSTANT_ENDING,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
