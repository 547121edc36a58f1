"""Reading SAN checkpoints in the released layout, with one-line errors."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

#: Keys of the released files that inference does not use (the training criterion's weights).
TRAINING_ONLY_KEYS = ("criterion.empty_weight",)


class CheckpointError(ValueError):
    """The file is not a usable SAN checkpoint; the message is one line naming it."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``{key: tensor}`` of a checkpoint file, loaded with ``weights_only=True``.

    Accepts detectron2's layout (``{"model": state_dict, ...}``), ``{"state_dict": ...}``
    and a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    if isinstance(loaded, dict):
        for key in ("model", "state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return dict(loaded)


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a released SAN checkpoint into ``model``: every key must match, name and shape."""
    state = read_state_dict(path)
    for key in TRAINING_ONLY_KEYS:
        state.pop(key, None)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        what = (
            "not a SAN checkpoint" if len(missing) == len(expected) else "does not match the config"
        )
        details = []
        if missing:
            details.append(f"{len(missing)} missing keys (first: {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise CheckpointError(f"{path}: {what}: {'; '.join(details)}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: does not match the config: {key} has shape {list(state[key].shape)}, "
                f"the model {list(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)
