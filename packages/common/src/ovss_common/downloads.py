"""Downloads with a pinned SHA-256, a cache and an offline mode.

Files from the Python package registry (the labelme sdist behind mini-voc, the detectron2
sdist) are found through the registry's JSON simple index (PEP 691) with urllib. The index
is the one the ordinary clients use: ``$UV_DEFAULT_INDEX``, ``$UV_INDEX_URL`` or
``$PIP_INDEX_URL`` when set, else the public default. With ``OVSS_OFFLINE=1`` nothing is
downloaded: a file must already be in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ovss_common.hashing import cache_dir
from ovss_common.outputs import write_atomic

_PUBLIC_INDEX = "https://pypi.org/simple"
_JSON_SIMPLE = "application/vnd.pypi.simple.v1+json"
_TIMEOUT = 120


class DownloadError(Exception):
    """A file that cannot be had: offline, not listed, network failure or checksum mismatch."""


def offline() -> bool:
    return os.environ.get("OVSS_OFFLINE", "") not in ("", "0")


def index_url() -> str:
    for variable in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        if os.environ.get(variable):
            return os.environ[variable].rstrip("/")
    return _PUBLIC_INDEX


class Progress:
    """A download's progress on a terminal's stderr, redrawn in place at most every 0.2 s
    (``name: 312.0/598.2 MiB 52% 11.4 MiB/s``); nothing when stderr is not a terminal."""

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total
        self.done = 0
        self.start = self.shown = time.monotonic()
        self.enabled = sys.stderr.isatty()

    def text(self) -> str:
        mib = 2**20
        rate = self.done / mib / max(time.monotonic() - self.start, 1e-6)
        if self.total:
            share = (
                f"{self.done / mib:.1f}/{self.total / mib:.1f} MiB {100 * self.done // self.total}%"
            )
        else:
            share = f"{self.done / mib:.1f} MiB"
        return f"{self.name}: {share} {rate:.1f} MiB/s"

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled and time.monotonic() - self.shown >= 0.2:
            self.shown = time.monotonic()
            print(f"\r{self.text()}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(f"\r{self.text()}", file=sys.stderr, flush=True)


def download(url: str, destination: Path, sha256: str | None, md5_prefix: str | None = None) -> str:
    """Download ``url`` to ``destination`` atomically; returns the file's SHA-256.

    ``sha256`` (when pinned) and ``md5_prefix`` (when the publisher gives one) are checked
    before the file is moved into place: a mismatch leaves nothing behind.
    """
    if offline():
        raise DownloadError(f"{destination.name} is not cached and OVSS_OFFLINE is set")
    digest = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)

    def write(file) -> None:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            progress = Progress(destination.name, int(response.headers.get("Content-Length") or 0))
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                md5.update(chunk)
                file.write(chunk)
                progress.advance(len(chunk))
            progress.close()
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DownloadError(
                f"{destination.name}: sha256 {digest.hexdigest()} does not match the pinned {sha256}"
            )
        if md5_prefix is not None and not md5.hexdigest().startswith(md5_prefix):
            raise DownloadError(
                f"{destination.name}: md5 {md5.hexdigest()} does not start with {md5_prefix}"
            )

    try:
        write_atomic(destination, write)
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"cannot download {destination.name} from {url}: {exc}") from None
    return digest.hexdigest()


def _verified(path: Path, sha256: str) -> bool:
    if not path.is_file():
        return False
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == sha256


def registry_file(project: str, filename: str, sha256: str) -> Path:
    """A release file of a registry project, verified against ``sha256`` and cached.

    Returns the cached path (``<cache dir>/downloads/<filename>``).
    """
    destination = cache_dir() / "downloads" / filename
    if _verified(destination, sha256):
        return destination
    if offline():
        raise DownloadError(f"{filename} is not cached and OVSS_OFFLINE is set")
    page = f"{index_url()}/{project}/"
    request = urllib.request.Request(page, headers={"Accept": _JSON_SIMPLE})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            listing = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"cannot read the package index page of {project}: {exc}") from None
    for entry in listing.get("files", []):
        if entry.get("filename") == filename:
            listed = entry.get("hashes", {}).get("sha256")
            if listed and listed != sha256:
                raise DownloadError(
                    f"{filename}: the index lists sha256 {listed}, pinned is {sha256}"
                )
            url = urllib.parse.urljoin(page, entry["url"])
            download(url, destination, sha256)
            return destination
    raise DownloadError(f"{filename} is not listed on the package index page of {project}")
