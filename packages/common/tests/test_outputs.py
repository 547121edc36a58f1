import numpy as np
import pytest

from ovss_common.hashing import sha256_file, sha256_files
from ovss_common.outputs import LabelMapError, read_label_map, write_label_map, write_scores


def test_sixteen_bit_label_map_round_trip(tmp_path):
    labels = np.array([[0, 1, 300], [846, 65535, 2]], np.int64)
    path = write_label_map(tmp_path / "x.png", labels)
    assert np.array_equal(read_label_map(path), labels)
    assert not list(tmp_path.glob(".*.tmp"))


def test_label_map_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError):
        write_label_map(tmp_path / "x.png", np.array([[70000]]))
    assert not (tmp_path / "x.png").exists()


def test_read_label_map_errors(tmp_path):
    rgb = tmp_path / "rgb.png"
    from PIL import Image

    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(rgb)
    with pytest.raises(LabelMapError, match="single-channel"):
        read_label_map(rgb)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(LabelMapError, match=str(broken)):
        read_label_map(broken)


def test_scores_npz(tmp_path):
    scores = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    path = write_scores(tmp_path / "s.npz", scores)
    assert np.array_equal(np.load(path)["scores"], scores)


def test_sha256_cache_follows_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    first = sha256_file(path)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert (tmp_path / "cache" / "sha256.json").is_file()
    path.write_bytes(b"abcd")
    assert sha256_file(path) != first
    assert sha256_files([path]) == sha256_files([str(path)])


def test_sixteen_bit_tiff_ground_truth(tmp_path):
    from PIL import Image

    labels = np.array([[0, 846], [65535, 458]], np.uint16)
    Image.fromarray(labels).save(tmp_path / "gt.tif")
    assert read_label_map(tmp_path / "gt.tif").tolist() == labels.tolist()


def test_the_test_client_fails_on_a_worker_that_never_answers(tmp_path, monkeypatch):
    from ovss_common.testing import WorkerClient

    (tmp_path / "silent_worker.py").write_text(
        "import sys, time\nsys.stdin.readline()\ntime.sleep(600)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    client = WorkerClient("silent_worker", timeout=1)
    try:
        with pytest.raises(AssertionError, match="no reply to ping within 1 s"):
            client.ask("ping")
    finally:
        client.close()
    assert client.process.returncode is not None
