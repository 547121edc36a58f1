"""Builders: a SAN model from a config (and weights)."""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode

from ovss_san.checkpoint import load_checkpoint
from ovss_san.config import get_config
from ovss_san.san import SAN


def build_san(cfg: CfgNode, config_dir: Path | None = None) -> SAN:
    """A SAN with random weights on the CPU (the parameters SAN's training froze have
    ``requires_grad`` off); CLIP architectures not built into open_clip are read from
    ``<config_dir>/<CLIP_MODEL_NAME>.json``."""
    return SAN(cfg, config_dir=config_dir).eval()


def load_san(
    config: str | Path,
    weights: str | Path | None,
    device: str | torch.device = "cpu",
    overrides: list[str] | None = None,
) -> tuple[SAN, CfgNode]:
    """Build the model of ``config`` (plus ``KEY VALUE`` overrides), load ``weights`` (a
    released-layout checkpoint; None keeps random weights) and move it to ``device``."""
    cfg = get_config(config, overrides)
    model = build_san(cfg, Path(config).resolve().parent)
    if weights is not None:
        load_checkpoint(model, weights)
    return model.to(device), cfg
