"""The weights zoo: released checkpoints by name, downloaded once into the cache, verified.

An entry names a file, where to get it, and what it must hash to. Where the publisher
gives no checksum (SAN's files on Hugging Face, the OpenAI CLIP mirrors), the SHA-256 is
recorded on first download (``<file>.sha256`` beside it) and every later use is verified
against it; a pinned ``sha256`` or an ``md5_prefix`` (OVSeg's release notes) is checked
before the file is moved into place. Files live in ``<cache dir>/weights/<method>/``; an
entry whose sub-folder changed names the earlier ones (``moved_from``), and a copy found there
is moved into place on first use (then verified like any cached file).

With ``OVSS_OFFLINE=1`` nothing is downloaded: a missing file is a one-line error naming
the URL and the path to put it at.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ovss_common.downloads import DownloadError, download, offline
from ovss_common.hashing import cache_dir, sha256_file
from ovss_common.outputs import write_atomic


class WeightsError(Exception):
    """Weights that cannot be had or do not verify; the message is one line."""


@dataclass(frozen=True)
class WeightsEntry:
    """One released weights file.

    Attributes:
        name: the zoo name (``"san_vit_b_16"``).
        method: the method it belongs to (cache sub-folder).
        filename: the file name in the cache.
        url: where it is published.
        sha256: the pinned SHA-256, when known here.
        md5_prefix: a prefix of the MD5 the publisher states, when any.
        config: the method config file it goes with (method-specific, informative).
        moved_from: cache sub-folders earlier versions kept this file in.
    """

    name: str
    method: str
    filename: str
    url: str
    sha256: str | None = None
    md5_prefix: str | None = None
    config: str | None = None
    moved_from: tuple[str, ...] = ()

    @property
    def digest_status(self) -> str:
        """How a download is checked: a digest the publisher states, or trust on first use."""
        if self.sha256 is not None:
            return "sha256 pinned (published)"
        if self.md5_prefix is not None:
            return "md5 prefix pinned (published); sha256 recorded on first download"
        return "trust on first use: sha256 recorded on first download"

    @property
    def path(self) -> Path:
        return cache_dir() / "weights" / self.method / self.filename

    @property
    def recorded_sha256_path(self) -> Path:
        return self.path.with_name(self.path.name + ".sha256")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record(entry: WeightsEntry, digest: str) -> None:
    line = f"{digest}  {entry.filename}\n".encode()
    write_atomic(entry.recorded_sha256_path, lambda file: file.write(line))


def expected_sha256(entry: WeightsEntry) -> str | None:
    """The pinned SHA-256, else the one recorded at first download, else None."""
    if entry.sha256 is not None:
        return entry.sha256
    if entry.recorded_sha256_path.is_file():
        return entry.recorded_sha256_path.read_text().split()[0]
    return None


def verify(entry: WeightsEntry, path: Path | None = None) -> str:
    """Check a cached (or user-placed) file; returns its SHA-256.

    A file placed by hand with nothing recorded yet gets its digest recorded, as a download
    would (after the MD5 prefix check, when the entry has one).
    """
    path = entry.path if path is None else path
    actual = sha256_file(path)
    expected = expected_sha256(entry)
    if expected is None:
        if entry.md5_prefix is not None and not _md5(path).startswith(entry.md5_prefix):
            raise WeightsError(
                f"{path}: md5 does not start with {entry.md5_prefix}: not the released "
                f"{entry.name}; delete it and download again"
            )
        _record(entry, actual)
        return actual
    if actual != expected:
        raise WeightsError(
            f"{path}: sha256 {actual[:12]}... differs from the {'pinned' if entry.sha256 else 'recorded'} "
            f"{expected[:12]}...: corrupt or replaced; delete it and download again"
        )
    return actual


def adopt_earlier_copy(entry: WeightsEntry) -> bool:
    """Move a copy of ``entry`` cached in one of its ``moved_from`` sub-folders (and its
    recorded SHA-256) into ``entry.path``, when nothing is there yet; whether it moved one.
    The file is verified when it is used, as any cached file is."""
    if entry.path.exists():
        return False
    for folder in entry.moved_from:
        earlier = replace(entry, method=folder, moved_from=())
        if not earlier.path.is_file():
            continue
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        if earlier.recorded_sha256_path.is_file() and not entry.recorded_sha256_path.exists():
            os.replace(earlier.recorded_sha256_path, entry.recorded_sha256_path)
        os.replace(earlier.path, entry.path)
        print(f"ovss: moved {earlier.path} to {entry.path}", file=sys.stderr, flush=True)
        return True
    return False


def import_file(entry: WeightsEntry, source: Path) -> Path:
    """Put a file the user obtained by other means (a browser, a USB stick) into the cache as
    ``entry``, after checking it as a download is checked: against the pinned SHA-256 or the
    published MD5 prefix; with neither, its SHA-256 is recorded (trust on first use)."""
    source = Path(source)
    if not source.is_file():
        raise WeightsError(f"{source}: no such file")
    digest = sha256_file(source)
    pinned = expected_sha256(entry)
    if pinned is not None and digest != pinned:
        raise WeightsError(
            f"{source}: sha256 {digest[:12]}... is not the {'pinned' if entry.sha256 else 'recorded'} "
            f"{pinned[:12]}... of {entry.name}: another file"
        )
    if (
        pinned is None
        and entry.md5_prefix is not None
        and not _md5(source).startswith(entry.md5_prefix)
    ):
        raise WeightsError(
            f"{source}: md5 does not start with {entry.md5_prefix}: not {entry.name}"
        )
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    partial = entry.path.with_name(f".{entry.path.name}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, entry.path)
    if entry.sha256 is None:
        _record(entry, digest)
    return entry.path


def fetch(entry: WeightsEntry) -> Path:
    """The verified local path of ``entry``, downloading it on first use (a copy in an
    earlier cache sub-folder is moved into place instead)."""
    adopt_earlier_copy(entry)
    path = entry.path
    if path.is_file():
        verify(entry)
        return path
    if offline():
        raise WeightsError(
            f"{entry.name}: {path} is missing and OVSS_OFFLINE is set; "
            f"download {entry.url} and place it there"
        )
    print(f"ovss: downloading {entry.name} from {entry.url} to {path}", file=sys.stderr, flush=True)
    try:
        digest = download(entry.url, path, expected_sha256(entry), entry.md5_prefix)
    except DownloadError as exc:
        raise WeightsError(
            f"{entry.name}: {exc}; or download {entry.url} yourself and place it at {path}"
        ) from None
    if expected_sha256(entry) is None:
        _record(entry, digest)
    return path
