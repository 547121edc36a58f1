"""OpenAI-format CLIP weights (``ovss_common.openai_clip``, tested here because it needs torch
and the openai-clip package): OpenAI's TorchScript archives, bare state dicts and open_clip
mirrors all load; the zoo pins the SHA-256 OpenAI publishes."""

from __future__ import annotations

import pytest
import torch
from conftest import GOLDEN

from ovss_car.clip_model import load_clip
from ovss_car.zoo import SAM_WEIGHTS
from ovss_common.checkpoints import CheckpointError, read_state_dict
from ovss_common.openai_clip import (
    OPENAI_CLIP_MIRRORS,
    OPENAI_CLIPS,
    is_torchscript_archive,
    openai_state_dict,
)


def test_open_clip_layout_of_an_openai_model_converts(tmp_path):
    state = torch.load(GOLDEN / "cam_clip.pth", weights_only=True)
    mirrored = {
        k: v
        for k, v in state.items()
        if k not in ("input_resolution", "context_length", "vocab_size")
    }
    mirrored["attn_mask"] = torch.zeros(77, 77)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(mirrored, path)
    converted = openai_state_dict(path)
    assert "attn_mask" not in converted and "visual.proj" in converted
    reference = load_clip(GOLDEN / "cam_clip.pth").state_dict()
    for key, value in load_clip(path).state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_missing_keys_are_one_line(tmp_path):
    state = torch.load(GOLDEN / "cam_clip.pth", weights_only=True)
    del state["visual.proj"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"no visual\.proj"):
        load_clip(path)


class _Tensors(torch.nn.Module):
    """A module tree whose state dict is ``state`` (buffers at the dotted keys)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            owner = self
            *parents, leaf = key.split(".")
            for part in parents:
                if not hasattr(owner, part):
                    owner.add_module(part, torch.nn.Module())
                owner = getattr(owner, part)
            owner.register_buffer(leaf, value.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_openai_torchscript_archive_loads_with_jit(tmp_path):
    state = torch.load(GOLDEN / "cam_clip.pth", weights_only=True)
    path = tmp_path / "ViT-B-16.pt"
    torch.jit.save(torch.jit.script(_Tensors(state)), str(path))
    plain = tmp_path / "plain.pth"
    torch.save(state, plain)
    assert is_torchscript_archive(path) and not is_torchscript_archive(plain)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(path)
    loaded = openai_state_dict(path)
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    reference = load_clip(GOLDEN / "cam_clip.pth").state_dict()
    for key, value in load_clip(path).state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_clip_entries_pin_the_sha256_openai_publishes():
    from clip.clip import _MODELS

    assert set(OPENAI_CLIPS) == {"ViT-B/16", "ViT-L/14", "ViT-L/14@336px"} <= set(_MODELS)
    for name, entry in OPENAI_CLIPS.items():
        published = _MODELS[name]
        assert entry.url == published
        assert entry.sha256 == published.split("/")[-2]
        assert entry.filename == published.split("/")[-1]
        assert entry.digest_status.startswith("sha256 pinned")
    for mirror in OPENAI_CLIP_MIRRORS.values():
        assert mirror.sha256 is None and mirror.digest_status.startswith("trust on first use")
    assert all(entry.digest_status.startswith("md5 prefix") for entry in SAM_WEIGHTS.values())


def test_the_registry_lists_the_clips_its_configs_name_and_their_mirrors():
    from ovss_car.models import MODELS

    files = MODELS.weights_entries()
    clips = {"ViT-B/16", "ViT-L/14"}
    assert clips | {f"{name} (mirror)" for name in clips} <= set(files)
    assert "ViT-L/14@336px" not in files and "ViT-L/14@336px (mirror)" not in files
    rows = {row["name"]: row for row in MODELS.listing()}
    assert rows["ViT-B/16"]["method"] == "car" and "voc" in rows["ViT-B/16"]["models"]
    assert rows["ViT-B/16"]["path"].endswith("weights/openai-clip/ViT-B-16.pt")
