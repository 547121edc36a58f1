"""Generated blocks in Markdown pages: the text between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` is rewritten by a command, the rest of the page is kept as written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ovss.errors import OvssError
from ovss_common.outputs import write_atomic


def markers(name: str) -> tuple[str, str]:
    """The comment lines that open and close the block ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_block(path: Path, name: str) -> str:
    """The lines inside block ``name`` of ``path`` (between its marker lines)."""
    return _split(path, name)[1]


def replace_block(path: Path, name: str, body: str | Callable[[str], str]) -> None:
    """Replace the lines inside block ``name`` of ``path`` with ``body`` (or ``body(old)``),
    written as given between the marker lines.

    Raises:
        OvssError: ``path`` is missing, or lacks exactly one pair of the block's markers.
    """
    head, old, tail = _split(path, name)
    new = body(old) if callable(body) else body
    start, end = markers(name)
    text = f"{head}{start}\n{new}\n{end}{tail}"
    write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def _split(path: Path, name: str) -> tuple[str, str, str]:
    if not path.is_file():
        raise OvssError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise OvssError(f"{path}: needs exactly one '{start}' ... '{end}' block")
    head, rest = text.split(start)
    body, tail = rest.split(end)
    return head, body.removeprefix("\n").removesuffix("\n"), tail
