"""Checkpoint layout: the released key/shape manifests, and one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CHECKPOINT, CONFIG

from ovss_san.build import build_san, load_san
from ovss_san.checkpoint import TRAINING_ONLY_KEYS, CheckpointError, load_checkpoint
from ovss_san.config import get_config
from ovss_san.models import MODELS

MANIFESTS = Path(__file__).resolve().parent / "golden_full"


@pytest.mark.parametrize("name", sorted(MODELS.models))
def test_full_size_model_matches_the_released_layout(name):
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    with torch.device("meta"):
        model = build_san(get_config(MODELS.entry(name).config))
    ours = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    released = {entry["key"]: entry["shape"] for entry in manifest["state_dict"]}
    for key in TRAINING_ONLY_KEYS:
        assert released.pop(key) is not None
    assert sorted(ours) == sorted(released)
    assert ours == released
    elements = sum(tensor.numel() for tensor in model.state_dict().values())
    assert elements + len(TRAINING_ONLY_KEYS) * 172 == manifest["num_elements_total"]


def test_golden_checkpoint_loads_every_key(tiny_model):
    model, _ = tiny_model()
    saved = torch.load(CHECKPOINT, weights_only=True)["model"]
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


def _write(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_san(CONFIG, tmp_path / "absent.pth")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(CHECKPOINT.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as info:
        load_san(CONFIG, path)
    assert "\n" not in str(info.value)


class _RunsCode:
    """An object whose unpickling calls a function (here a harmless one)."""

    def __reduce__(self):
        return (print, ("unpickled",))


@pytest.mark.parametrize("extra", [Path("/"), _RunsCode()], ids=["object", "code"])
def test_pickled_objects_are_refused_without_advice_to_lower_the_guard(tmp_path, capsys, extra):
    path = _write(tmp_path / "object.pth", {"model": {"x": torch.zeros(1)}, "extra": extra})
    with pytest.raises(CheckpointError, match="contains code, not only tensors") as info:
        load_san(CONFIG, path)
    message = str(info.value)
    assert "\n" not in message and "weights_only" not in message and "False" not in message
    assert "unpickled" not in capsys.readouterr().out


def test_checkpoint_of_another_method(tmp_path):
    other = {"model": {"sem_seg_head.predictor.weight": torch.zeros(3, 3)}}
    with pytest.raises(CheckpointError, match="not a SAN checkpoint"):
        load_san(CONFIG, _write(tmp_path / "other.pth", other))


def test_missing_and_mismatched_keys(tmp_path):
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    del state["side_adapter_network.query_embed"]
    with pytest.raises(CheckpointError, match=r"1 missing keys .*query_embed"):
        load_san(CONFIG, _write(tmp_path / "missing.pth", {"model": state}))
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    state["side_adapter_network.query_embed"] = torch.zeros(1, 5, 48)
    with pytest.raises(CheckpointError, match=r"query_embed has shape \[1, 5, 48\]"):
        load_san(CONFIG, _write(tmp_path / "shape.pth", {"model": state}))


@pytest.mark.parametrize("layout", ["bare", "state_dict"])
def test_bare_and_state_dict_layouts_load(tmp_path, layout):
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    model = build_san(get_config(CONFIG), CONFIG.parent)
    assert not torch.equal(
        model.state_dict()["side_adapter_network.query_embed"],
        state["side_adapter_network.query_embed"],
    )
    wrapped = state if layout == "bare" else {"state_dict": state}
    load_checkpoint(model, _write(tmp_path / "layout.pth", wrapped))
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[key]), key
