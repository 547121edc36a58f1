"""ovss_common.openai_clip without torch: the zoo entries of OpenAI's CLIPs, the mirror fallback,
copies cached by CaR before the entries were shared, and telling TorchScript archives apart.
Reading the weights needs torch: CaR's tests/test_weights.py covers ``openai_state_dict``."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from ovss_common import openai_clip
from ovss_common.openai_clip import (
    OPENAI_CLIP_MIRRORS,
    OPENAI_CLIPS,
    is_torchscript_archive,
    released_clip,
)
from ovss_common.protocol import WorkerError

NAMES = ("ViT-B/16", "ViT-L/14", "ViT-L/14@336px")


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_module_imports_without_torch():
    assert "torch" not in vars(openai_clip)


def test_every_method_shares_one_cached_copy(offline_cache):
    assert tuple(OPENAI_CLIPS) == tuple(OPENAI_CLIP_MIRRORS) == NAMES
    folder = offline_cache / "weights" / "openai-clip"
    for name in NAMES:
        pinned, mirror = OPENAI_CLIPS[name], OPENAI_CLIP_MIRRORS[name]
        assert pinned.name == name and mirror.name == f"{name} (mirror)"
        assert pinned.path.parent == mirror.path.parent == folder
        assert pinned.url.endswith(f"/{pinned.sha256}/{pinned.filename}")
        assert pinned.url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert mirror.url.startswith("https://huggingface.co/timm/") and mirror.sha256 is None
    large = OPENAI_CLIPS["ViT-L/14@336px"]
    assert large.filename == "ViT-L-14-336px.pt"
    assert large.sha256 == "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"
    assert "/vit_large_patch14_clip_336.openai/" in OPENAI_CLIP_MIRRORS["ViT-L/14@336px"].url
    files = [e.filename for e in (*OPENAI_CLIPS.values(), *OPENAI_CLIP_MIRRORS.values())]
    assert len(set(files)) == len(files)


def test_a_placed_file_with_another_digest_is_refused_and_the_mirror_used():
    entry = OPENAI_CLIPS["ViT-B/16"]
    entry.path.parent.mkdir(parents=True)
    entry.path.write_bytes(b"not the released file")
    with pytest.raises(WorkerError, match="differs from the pinned") as info:
        released_clip("ViT-B/16")
    assert info.value.type == "bad_checkpoint" and "\n" not in info.value.message
    mirror = OPENAI_CLIP_MIRRORS["ViT-B/16"]
    mirror.path.write_bytes(b"the mirror's weights")
    assert released_clip("ViT-B/16") == str(mirror.path)
    assert mirror.recorded_sha256_path.is_file(), "trust on first use: its digest is recorded"


def test_offline_without_any_copy_names_the_file_and_where_to_put_it():
    with pytest.raises(WorkerError, match=r"ViT-L-14-336px\.pt") as info:
        released_clip("ViT-L/14@336px")
    assert "OVSS_OFFLINE" in info.value.message and "openai-clip" in info.value.message
    with pytest.raises(KeyError):
        released_clip("ViT-H/14")


def test_copies_cached_for_car_before_are_moved_and_verified(offline_cache):
    earlier = offline_cache / "weights" / "car"
    earlier.mkdir(parents=True)
    (earlier / "ViT-B-16.pt").write_bytes(b"a corrupt download")
    mirror = OPENAI_CLIP_MIRRORS["ViT-B/16"]
    (earlier / mirror.filename).write_bytes(b"mirrored")
    digest = hashlib.sha256(b"mirrored").hexdigest()
    (earlier / f"{mirror.filename}.sha256").write_text(f"{digest}  {mirror.filename}\n")
    # The pinned copy moves over and fails its pinned digest; the mirror's copy moves over
    # with its recorded digest and is used.
    assert released_clip("ViT-B/16") == str(mirror.path)
    assert OPENAI_CLIPS["ViT-B/16"].path.read_bytes() == b"a corrupt download"
    assert mirror.recorded_sha256_path.read_text().split()[0] == digest
    assert sorted(p.name for p in earlier.iterdir()) == []


def test_torchscript_archives_are_told_from_pickled_state_dicts(tmp_path):
    archive = tmp_path / "ViT-B-16.pt"
    with zipfile.ZipFile(archive, "w") as file:
        file.writestr("ViT-B-16/code/__torch__/model.py", "")
        file.writestr("ViT-B-16/data.pkl", b"")
    pickled = tmp_path / "state.pth"
    with zipfile.ZipFile(pickled, "w") as file:
        file.writestr("state/data.pkl", b"")
        file.writestr("state/data/0", b"")
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02not a zip")
    assert is_torchscript_archive(archive)
    assert not is_torchscript_archive(pickled)
    assert not is_torchscript_archive(tmp_path / "legacy.pth")
    assert not is_torchscript_archive(tmp_path / "absent.pt")
