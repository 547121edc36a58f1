"""Reading released checkpoints with ``weights_only=True`` and loading them key for key.

Used by the method workers (which have torch); the harness never imports this module, and
``ovss_common`` itself does not depend on torch: it is imported inside the functions.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """The file is not a usable checkpoint; the message is one line naming it."""


#: What torch names when a weights-only load meets an object it would have to construct.
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def refusal(path: Path, message: str) -> str:
    """One line for a file torch's weights-only unpickler refused. torch's own message advises
    turning the protection off; this one says what the file holds instead."""
    found = _UNSUPPORTED_GLOBAL.search(message)
    if found is None and "Weights only load failed" not in message:
        reason = message.strip().splitlines()[0] if message.strip() else "unpickling failed"
        return f"{path}: not a readable PyTorch checkpoint ({reason})"
    what = f" ({found.group(1)})" if found else ""
    return (
        f"{path}: contains code, not only tensors{what}; refused, because loading it could run "
        "that code"
    )


def read_state_dict(path: str | Path) -> dict[str, Any]:
    """The ``{key: tensor}`` of a checkpoint file, loaded with ``weights_only=True``.

    Accepts detectron2's layout (``{"model": state_dict, ...}``), ``{"state_dict": ...}``
    and a bare state dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(refusal(path, str(exc))) from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as exc:
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


def load_state_dict_strictly(
    model: Any, state: dict[str, Any], path: str | Path, method: str, ignored: tuple[str, ...] = ()
) -> None:
    """Load ``state`` into ``model`` after checking every key and shape.

    ``ignored`` keys (training-only entries of the released files) are dropped. Missing or
    unexpected keys and shape mismatches are one-line errors naming the first offender; a
    file sharing no key with the model is "not a <method> checkpoint".
    """
    state = {key: value for key, value in state.items() if key not in ignored}
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        article = "an" if method[:1] in "AEIOU" else "a"
        what = (
            f"not {article} {method} checkpoint"
            if len(missing) == len(expected)
            else "does not match the config"
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
