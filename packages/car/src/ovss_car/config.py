"""CaR configuration: the original YAML layout (``clip``, ``car``, ``sam``, ``test``) read as is.

``CarConfig`` gives typed access to the keys inference reads, with the original model's
defaults for keys a config leaves out; the other keys (data roots) are kept untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ovss_car.car import PassSettings
from ovss_car.sam import SamSettings

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: The original model's defaults for ``car.*`` keys a config may leave out.
DEFAULTS: dict[str, Any] = {
    "confidence_threshold": 0.45,
    "mask_threshold": 0.5,
    "clipes_threshold": 0.4,
    "visual_prompt_type": ["circle"],
    "bg_cls": None,
    "bg_factor": 1.0,
    "semantic_templates": None,
}


@dataclass(frozen=True)
class CarConfig:
    """A parsed CaR config file.

    Attributes:
        path: where it was read from.
        sections: the YAML document.
    """

    path: Path
    sections: dict[str, Any]

    def car(self, key: str) -> Any:
        return self.sections.get("car", {}).get(key, DEFAULTS.get(key))

    @property
    def cam_checkpoint(self) -> str:
        """``clip.clip_model_name``: the CAM CLIP (a file name in the weights folder)."""
        return str(self.sections["clip"]["clip_model_name"])

    @property
    def semantic_checkpoint(self) -> str:
        """``clip.semantic_clip_model_name``: the classifier CLIP."""
        return str(self.sections["clip"]["semantic_clip_model_name"])

    @property
    def dataset(self) -> str | None:
        return self.sections.get("test", {}).get("ds_name")

    def with_car(self, **values: Any) -> CarConfig:
        """This config with some ``car.*`` values replaced (worker options)."""
        sections = {**self.sections, "car": {**self.sections.get("car", {}), **values}}
        return CarConfig(path=self.path, sections=sections)

    def sam(self, key: str, default: Any = None) -> Any:
        return (self.sections.get("sam") or {}).get(key, default)

    @property
    def sam_model_type(self) -> str:
        """``sam.model_type`` (``vit_h`` when the config has no SAM section)."""
        return str(self.sam("model_type", "vit_h"))

    @property
    def sam_checkpoint(self) -> Path | None:
        """``sam.sam_checkpoint`` with environment variables expanded, when it is a file."""
        value = self.sam("sam_checkpoint")
        if not value:
            return None
        path = Path(os.path.expandvars(str(value)))
        return path if path.is_file() else None

    def sam_settings(self) -> SamSettings:
        """The SAM refinement knobs (``sam.*`` and ``car.iom_thres``; original defaults)."""
        defaults = SamSettings()
        return SamSettings(
            points_per_side=int(self.sam("points_per_side", defaults.points_per_side)),
            pred_iou_thresh=float(self.sam("pred_iou_thresh", defaults.pred_iou_thresh)),
            stability_score_thresh=float(
                self.sam("stability_score_thresh", defaults.stability_score_thresh)
            ),
            box_nms_thresh=float(self.sam("box_nms_thresh", defaults.box_nms_thresh)),
            iom_thres=float(self.sections.get("car", {}).get("iom_thres", defaults.iom_thres)),
            min_pred_threshold=float(self.sam("min_pred_threshold", defaults.min_pred_threshold)),
            matching_thresh=float(self.sam("matching_thresh", defaults.matching_thresh)),
        )

    def pass_settings(
        self, stuff: bool = False, background: list[str] | None = None
    ) -> PassSettings:
        """Settings of the thing pass, or of the stuff pass (its own prompts and background
        exponent; CAM background words = ``background``, the thing vocabulary)."""
        templates = self.car("semantic_templates")
        prompt_key = "stuff_visual_prompt_type" if stuff else "visual_prompt_type"
        prompts = (
            self.car(prompt_key)
            if self.car(prompt_key) is not None
            else self.car("visual_prompt_type")
        )
        if isinstance(prompts, str):
            prompts = [prompts]
        bg_factor = (
            self.car("stuff_bg_factor")
            if stuff and self.car("stuff_bg_factor") is not None
            else self.car("bg_factor")
        )
        words = background if stuff else self.car("bg_cls")
        return PassSettings(
            confidence_threshold=float(self.car("confidence_threshold")),
            mask_threshold=float(self.car("mask_threshold")),
            clipes_threshold=float(self.car("clipes_threshold")),
            visual_prompt_type=tuple(prompts),
            bg_factor=float(bg_factor),
            background=tuple(words) if words else None,
            semantic_templates=tuple(templates) if templates else None,
        )


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``ade_150``, ``voc``, ...)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def config_file(value: str | Path) -> Path:
    """The file a config argument names: an existing path, else a shipped config's name."""
    path = Path(value)
    if path.is_file() or path.suffix or len(path.parts) != 1:
        return path
    shipped = CONFIG_DIR / f"{path.name}.yaml"
    return shipped if shipped.is_file() else path


def load_config(path: str | Path) -> CarConfig:
    """Read a CaR YAML config (a path, or a shipped config's name such as ``ade_150``);
    ValueError for a file that is not one."""
    path = config_file(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such config file (shipped configs: {', '.join(shipped_configs())})"
        )
    try:
        sections = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML ({exc})".splitlines()[0]) from None
    if not isinstance(sections, dict) or "clip" not in sections or "car" not in sections:
        raise ValueError(f"{path}: not a CaR config (needs 'clip' and 'car' sections)")
    for key in ("clip_model_name", "semantic_clip_model_name"):
        if key not in sections["clip"]:
            raise ValueError(f"{path}: clip.{key} is missing")
    return CarConfig(path=path, sections=sections)
