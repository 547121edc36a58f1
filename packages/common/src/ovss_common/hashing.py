"""SHA-256 of files and folders, computed once per (path, size, mtime).

Checkpoints are hundreds of MB; hashing one takes seconds. The digests are remembered in
``<cache dir>/sha256.json`` keyed by absolute path, size and modification time, so a file
is read again only when it changes. The cache dir is ``$OVSS_CACHE_DIR`` (default
``~/.cache/ovss``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from ovss_common.outputs import write_json

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The OVSS cache folder (``$OVSS_CACHE_DIR`` or ``~/.cache/ovss``)."""
    return Path(os.environ.get("OVSS_CACHE_DIR") or Path.home() / ".cache" / "ovss")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def _digest_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path, *, use_cache: bool = True) -> str:
    """The hex SHA-256 of a file, remembered per (absolute path, size, mtime_ns)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    store = cache_dir() / "sha256.json"
    known: dict[str, str] = {}
    if use_cache and store.is_file():
        try:
            known = json.loads(store.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        if key in known:
            return known[key]
    digest = _digest_file(path)
    if use_cache:
        known = {k: v for k, v in known.items() if not k.startswith(f"{path}|")}
        known[key] = digest
        with contextlib.suppress(OSError):
            write_json(store, known)
    return digest


def sha256_files(paths: Iterable[str | Path]) -> str:
    """One digest for several files: SHA-256 over ``name:sha256`` lines sorted by file name."""
    lines = sorted(f"{Path(p).name}:{sha256_file(p)}" for p in paths)
    return sha256_text("\n".join(lines))
