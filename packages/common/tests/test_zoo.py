"""The weights zoo against a local HTTP server: first download, record, verify, offline."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest

from ovss_common import zoo
from ovss_common.zoo import WeightsEntry, WeightsError


@pytest.fixture
def server(tmp_path):
    """Serves ``tmp_path/served`` on 127.0.0.1; yields (folder, base URL, request log)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=folder))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OVSS_OFFLINE", raising=False)
    return tmp_path / "cache"


def _entry(base: str, **fields) -> WeightsEntry:
    return WeightsEntry(
        name="toy_weights", method="toy", filename="toy.pth", url=f"{base}/toy.pth", **fields
    )


def test_first_download_records_the_sha256_and_later_uses_verify_it(server):
    folder, base, requests = server
    (folder / "toy.pth").write_bytes(b"weights v1")
    entry = _entry(base)
    path = zoo.fetch(entry)
    assert path == entry.path and path.read_bytes() == b"weights v1"
    recorded = entry.recorded_sha256_path.read_text().split()[0]
    assert recorded == hashlib.sha256(b"weights v1").hexdigest()
    assert zoo.fetch(entry) == path
    assert len(requests) == 1, "a cached file is not downloaded again"
    path.write_bytes(b"tampered!!")
    with pytest.raises(WeightsError, match="differs from the recorded"):
        zoo.fetch(entry)


def test_pinned_sha256_mismatch_leaves_nothing_behind(server):
    folder, base, _ = server
    (folder / "toy.pth").write_bytes(b"something else")
    entry = _entry(base, sha256="0" * 64)
    with pytest.raises(WeightsError, match="does not match the pinned"):
        zoo.fetch(entry)
    assert not entry.path.exists()
    assert list(entry.path.parent.iterdir()) == []


def test_md5_prefix_is_checked(server):
    folder, base, _ = server
    (folder / "toy.pth").write_bytes(b"released")
    good = hashlib.md5(b"released").hexdigest()[:8]
    assert zoo.fetch(_entry(base, md5_prefix=good)).is_file()
    other = WeightsEntry("x", "toy", "other.pth", f"{base}/toy.pth", md5_prefix="ffffffff")
    with pytest.raises(WeightsError, match="md5"):
        zoo.fetch(other)


def test_offline_names_the_url_and_the_place(server, monkeypatch):
    _, base, requests = server
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    entry = _entry(base)
    with pytest.raises(WeightsError) as info:
        zoo.fetch(entry)
    message = str(info.value)
    assert entry.url in message and str(entry.path) in message and "\n" not in message
    assert requests == []


def test_a_file_placed_by_hand_is_used_offline(server, monkeypatch):
    _, base, _ = server
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    entry = _entry(base)
    entry.path.parent.mkdir(parents=True)
    entry.path.write_bytes(b"placed")
    assert zoo.fetch(entry) == entry.path
    assert entry.recorded_sha256_path.is_file()


def test_missing_on_the_server_is_one_line(server):
    _, base, _ = server
    entry = _entry(base)
    with pytest.raises(WeightsError, match="cannot download") as info:
        zoo.fetch(entry)
    assert "\n" not in str(info.value) and not entry.path.exists()


def test_a_copy_in_an_earlier_cache_folder_is_moved_into_place(server, cache):
    _, base, requests = server
    entry = _entry(base, moved_from=("old",))
    earlier = cache / "weights" / "old" / "toy.pth"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"cached before")
    earlier.with_name("toy.pth.sha256").write_text(
        f"{hashlib.sha256(b'cached before').hexdigest()}  toy.pth\n"
    )
    assert zoo.fetch(entry) == entry.path and entry.path.read_bytes() == b"cached before"
    assert not earlier.exists() and entry.recorded_sha256_path.is_file()
    assert requests == [], "nothing is downloaded"
    earlier.write_bytes(b"another copy")
    assert not zoo.adopt_earlier_copy(entry), "a file in place is never replaced"
    entry.path.unlink()
    with pytest.raises(WeightsError, match="differs from the recorded"):
        zoo.fetch(entry)


def test_import_file_checks_then_caches(tmp_path, monkeypatch):
    from ovss_common.hashing import sha256_bytes
    from ovss_common.zoo import WeightsEntry, WeightsError, import_file

    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    good = tmp_path / "good.bin"
    good.write_bytes(b"weights")
    pinned = WeightsEntry(
        name="p",
        method="m",
        filename="p.bin",
        url="https://x/p.bin",
        sha256=sha256_bytes(b"weights"),
    )
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"other")
    with pytest.raises(WeightsError, match="another file"):
        import_file(pinned, bad)
    assert not pinned.path.exists()
    assert import_file(pinned, good).read_bytes() == b"weights"
    trusted = WeightsEntry(name="t", method="m", filename="t.bin", url="https://x/t.bin")
    import_file(trusted, bad)
    assert trusted.recorded_sha256_path.read_text().split()[0] == sha256_bytes(b"other")
    with pytest.raises(WeightsError, match="another file"):
        import_file(trusted, good)
    with pytest.raises(WeightsError, match="no such file"):
        import_file(trusted, tmp_path / "absent.bin")


def test_a_download_shows_its_progress_on_a_terminal(server, monkeypatch, capsys):
    import sys

    folder, base, _ = server
    (folder / "toy.pth").write_bytes(b"w" * 3000)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    zoo.fetch(_entry(base))
    err = capsys.readouterr().err
    assert "\rtoy.pth: 0.0/0.0 MiB 100% " in err and err.endswith(" MiB/s\n")
