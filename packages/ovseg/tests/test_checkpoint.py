"""Checkpoint layout: the released key/shape manifests, and one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CHECKPOINT, CONFIG

from ovss_common.checkpoints import CheckpointError
from ovss_ovseg.build import TRAINING_ONLY_KEYS, build_ovseg, load_ovseg
from ovss_ovseg.config import get_config
from ovss_ovseg.models import MODELS

MANIFESTS = Path(__file__).resolve().parent / "golden_full"


@pytest.mark.parametrize("name", sorted(MODELS.models))
def test_full_size_model_matches_the_released_layout(name):
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    with torch.device("meta"):
        model = build_ovseg(get_config(MODELS.entry(name).config))
    ours = {key: list(tensor.shape) for key, tensor in model.state_dict().items()}
    released = {entry["key"]: entry["shape"] for entry in manifest["state_dict"]}
    for key in TRAINING_ONLY_KEYS:
        released.pop(key)
    assert sorted(ours) == sorted(released)
    assert ours == released


def test_golden_checkpoint_loads_every_key(tiny_model):
    model, _ = tiny_model()
    saved = torch.load(CHECKPOINT, weights_only=True)["model"]
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


def _write(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_ovseg(CONFIG, tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(CHECKPOINT.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_ovseg(CONFIG, corrupt)


def test_checkpoint_of_another_method(tmp_path):
    san_like = {"model": {"side_adapter_network.query_embed": torch.zeros(1, 5, 8)}}
    with pytest.raises(CheckpointError, match="not an OVSeg checkpoint"):
        load_ovseg(CONFIG, _write(tmp_path / "san.pth", san_like))


def test_missing_key(tmp_path):
    state = torch.load(CHECKPOINT, weights_only=True)["model"]
    del state["sem_seg_head.predictor.query_embed.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing keys .*query_embed"):
        load_ovseg(CONFIG, _write(tmp_path / "missing.pth", {"model": state}))
