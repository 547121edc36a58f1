"""Config keys SAN and OVSeg both inherit from MaskFormer's config, declared once.

Both originals add MaskFormer's data and solver keys (and a ``WANDB`` node) to detectron2's
config so that their YAML files merge; these functions declare them with the shared defaults on
a detectron2 ``CfgNode`` passed in (this package does not import detectron2).
"""

from __future__ import annotations

from typing import Any


def add_mask_former_data_keys(cfg: Any) -> None:
    """MaskFormer's semantic data-mapper keys and the solver keys both methods declare alike."""
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    cfg.SOLVER.TEST_IMS_PER_BATCH = 1
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"


def add_wandb_keys(cfg: Any, project: str) -> None:
    """The logging node: ``WANDB.PROJECT`` (``project``) and ``WANDB.NAME`` (None)."""
    cfg.WANDB = type(cfg)()
    cfg.WANDB.PROJECT = project
    cfg.WANDB.NAME = None
