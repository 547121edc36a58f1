"""Builders: a SAN model from a config file (and weights), and one per released size."""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode

from ovss_san.checkpoint import load_checkpoint
from ovss_san.config import CONFIG_DIR, get_config
from ovss_san.san import SAN

#: Released model name -> its config file in ``ovss_san/configs``.
MODEL_CONFIGS = {
    "san_vit_b_16": CONFIG_DIR / "san_vit_b_16.yaml",
    "san_vit_large_14": CONFIG_DIR / "san_vit_large_14.yaml",
}


def build_san(cfg: CfgNode, config_dir: Path | None = None) -> SAN:
    """A SAN with random weights on the CPU; CLIP architectures not built into open_clip
    are read from ``<config_dir>/<CLIP_MODEL_NAME>.json``."""
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


def build_san_vit_b_16() -> SAN:
    """SAN ViT-B/16 (random weights)."""
    return build_san(get_config(MODEL_CONFIGS["san_vit_b_16"]))


def build_san_vit_large_14() -> SAN:
    """SAN ViT-L/14 at 336 px (random weights)."""
    return build_san(get_config(MODEL_CONFIGS["san_vit_large_14"]))
