"""The CLIP model SAN slices into its three CLIP parts, built with open_clip.

SAN uses one OpenAI CLIP: visual blocks ``[0, k)`` feed the side adapter and the
recognition head, blocks ``[k, L)`` form the recognition head, and the text tower is the
classifier. ``build_clip`` builds that model (random weights: the SAN checkpoint carries
all of CLIP) from an open_clip architecture name, or from ``<name>.json`` next to the SAN
config for architectures open_clip does not ship.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
from open_clip.model import CLIP


class ClipArchitectureError(ValueError):
    """The configured CLIP architecture cannot be resolved."""


def open_clip_name(name: str) -> str:
    """open_clip spells ``ViT-B/16`` as ``ViT-B-16``."""
    return name.replace("/", "-")


def architecture_file(name: str, config_dir: Path | None) -> Path | None:
    """``<config_dir>/<name>.json`` (either spelling of ``name``), if there is one."""
    if config_dir is None:
        return None
    for candidate in dict.fromkeys([name, open_clip_name(name)]):
        path = Path(config_dir) / f"{candidate}.json"
        if path.is_file():
            return path
    return None


def resolve_clip_config(name: str, config_dir: Path | None = None) -> dict[str, Any]:
    """The open_clip model config of ``name``: ``<config_dir>/<name>.json`` first, then
    open_clip's built-in configs."""
    path = architecture_file(name, config_dir)
    if path is not None:
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise ClipArchitectureError(f"{path}: not a JSON model config ({exc})") from None
    config = open_clip.get_model_config(open_clip_name(name))
    if config is None:
        where = f" nor in {config_dir}" if config_dir is not None else ""
        raise ClipArchitectureError(
            f"CLIP architecture {name!r} is neither an open_clip model{where} "
            f"(put {name}.json next to the config)"
        )
    return config


def build_clip(name: str, pretrained: str | None, config_dir: Path | None = None) -> CLIP:
    """An open_clip ``CLIP`` with random weights in the architecture ``name``.

    OpenAI trained its CLIPs with QuickGELU: ``pretrained="openai"`` (SAN's default) forces
    it, as does ``"quick_gelu": true`` in the model config.
    """
    config = resolve_clip_config(name, config_dir)
    quick_gelu = bool(config.pop("quick_gelu", False)) or pretrained == "openai"
    if "embed_dim" not in config or "vision_cfg" not in config or "text_cfg" not in config:
        raise ClipArchitectureError(f"CLIP architecture {name!r} is not a CLIP model config")
    return CLIP(**config, quick_gelu=quick_gelu)
