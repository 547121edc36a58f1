"""Loading released SAN checkpoints (shared reading and key checks: ``ovss_common.checkpoints``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ovss_common.checkpoints import CheckpointError, load_state_dict_strictly, read_state_dict

#: Keys of the released files that inference does not use (the training criterion's weights).
TRAINING_ONLY_KEYS = ("criterion.empty_weight",)

__all__ = ["TRAINING_ONLY_KEYS", "CheckpointError", "load_checkpoint", "read_state_dict"]


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a released SAN checkpoint into ``model``: every key must match, name and shape."""
    load_state_dict_strictly(model, read_state_dict(path), path, "SAN", TRAINING_ONLY_KEYS)
