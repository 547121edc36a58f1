"""detectron2 config helpers shared by the SAN and OVSeg configs: DeepLab's keys, and loading.

The released SAN and OVSeg configs were resolved with detectron2's DeepLab project config
(``projects/DeepLab``, not part of the installed ``detectron2`` package), so their YAML files set
these keys. ``add_deeplab_keys`` declares them, with DeepLab's defaults, on a detectron2
``CfgNode`` (passed in: this package does not import detectron2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def add_deeplab_keys(cfg: Any) -> None:
    """Declare the DeepLab keys on ``cfg`` (a detectron2 ``CfgNode`` from ``get_cfg()``)."""
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "hard_pixel_mining"
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
    cfg.MODEL.RESNETS.RES4_DILATION = 1
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]
    cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"


def load_config(cfg: Any, path: str | Path, overrides: list[str] | None = None) -> Any:
    """Merge the YAML file ``path`` (``_BASE_`` chains allowed) and ``KEY VALUE`` overrides into
    ``cfg`` (a method's default ``CfgNode``) and freeze it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        KeyError / ValueError: a key is unknown or a value has the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    cfg.merge_from_file(str(path))
    if overrides:
        cfg.merge_from_list(list(overrides))
    cfg.freeze()
    return cfg
