"""Training checkpoints in the released layout, written atomically, and resuming from them.

A checkpoint is ``{"model": state_dict, "optimizer", "scheduler", "scaler", "iteration",
"config"}`` (detectron2's layout, so ``ovss segment/eval --weights`` reads it as a released
file); the model's state includes ``criterion.empty_weight`` as the released files do.
``last_checkpoint`` names the newest file of the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ovss_common.checkpoints import CheckpointError
from ovss_san.training.step import TrainingStep

LAST_CHECKPOINT = "last_checkpoint"
FINAL = "model_final.pth"


class ResumeError(ValueError):
    """A run folder that cannot be resumed: one line."""


def checkpoint_name(iteration: int, max_iter: int) -> str:
    """``model_final.pth`` at the end, else ``model_<iteration, 7 digits>.pth``."""
    return FINAL if iteration >= max_iter else f"model_{iteration - 1:07d}.pth"


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` next to ``path`` and rename it into place, so that a killed process
    leaves the previous file intact."""
    partial = path.with_name(f".{path.name}.partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def save_checkpoint(folder: Path, training: TrainingStep, iteration: int, config: str) -> Path:
    """Save the state after ``iteration`` completed iterations; update ``last_checkpoint``."""
    state = dict(training.model.state_dict())
    state["criterion.empty_weight"] = training.criterion.class_weights(torch.device("cpu"))
    path = folder / checkpoint_name(iteration, training.cfg.SOLVER.MAX_ITER)
    atomic_save(
        {
            "model": {key: value.detach().cpu() for key, value in state.items()},
            "optimizer": training.optimizer.state_dict(),
            "scheduler": training.scheduler.state_dict(),
            "scaler": training.scaler.state_dict(),
            "amp": training.amp or "none",
            "iteration": iteration,
            "config": config,
        },
        path,
    )
    partial = folder / f".{LAST_CHECKPOINT}.partial"
    partial.write_text(path.name, encoding="utf-8")
    os.replace(partial, folder / LAST_CHECKPOINT)
    return path


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` names a last checkpoint to resume from."""
    return (folder / LAST_CHECKPOINT).is_file()


#: Settings a resumed run may change: they say when to save and evaluate, not how to train.
RESUMABLE_CHANGES = ("SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= _flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def config_difference(saved: str, current: str) -> str | None:
    """The first config key whose value differs between two config dumps (``RESUMABLE_CHANGES``
    aside), as ``KEY: saved -> current``; None when they train alike."""
    try:
        before, after = _flatten(yaml.safe_load(saved) or {}), _flatten(yaml.safe_load(current))
    except yaml.YAMLError:
        return "the checkpoint's config is unreadable"
    for key in sorted(before.keys() | after.keys()):
        if key not in RESUMABLE_CHANGES and before.get(key) != after.get(key):
            return f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
    return None


@dataclass
class Resumed:
    """Where a resumed run continues: the checkpoint file and its completed iterations."""

    path: Path
    iteration: int


def resume(folder: Path, training: TrainingStep, config: str) -> Resumed | None:
    """Restore the model, optimiser, schedule and scaler from the run's last checkpoint
    (None when the folder has none). A checkpoint made with another config is refused."""
    if not has_checkpoint(folder):
        return None
    marker = folder / LAST_CHECKPOINT
    path = folder / marker.read_text(encoding="utf-8").strip()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ResumeError(f"{marker} names {path.name}, which does not exist") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise ResumeError(f"checkpoint {path}: unreadable ({str(exc).splitlines()[0]})") from None
    if not isinstance(payload, dict) or "optimizer" not in payload or "model" not in payload:
        raise ResumeError(f"checkpoint {path}: not a training checkpoint of this trainer")
    difference = config_difference(str(payload.get("config", "")), config)
    if difference is not None:
        raise ResumeError(
            f"{folder} was trained with another config ({difference}); resume it with the same "
            "config and options, or choose another --out"
        )
    amp = training.amp or "none"
    if payload.get("amp", "none") != amp:
        raise ResumeError(
            f"{folder} was trained with mixed precision {payload.get('amp')!r}, not {amp!r}; "
            "resume with the same --amp and device"
        )
    state = dict(payload["model"])
    state.pop("criterion.empty_weight", None)
    try:
        training.model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: does not fit the model ({exc})") from None
    training.optimizer.load_state_dict(payload["optimizer"])
    training.scheduler.load_state_dict(payload["scheduler"])
    if payload["scaler"]:
        training.scaler.load_state_dict(payload["scaler"])
    return Resumed(path=path, iteration=int(payload["iteration"]))
