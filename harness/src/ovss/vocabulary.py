"""Vocabularies from the command line: ``--classes``, ``--classes-file``, ``--classes-from``.

Names are stripped; empty and duplicate names are rejected before anything is sent to a
worker. Label indices always refer to the vocabulary as sent.
"""

from __future__ import annotations

from pathlib import Path

from ovss.datasets import get_dataset
from ovss.environments import get_method
from ovss.errors import OvssError
from ovss_common.protocol import MAX_VOCABULARY


def clean_vocabulary(names: list[str], source: str) -> list[str]:
    """Strip every name; reject an empty list, blank names, duplicates and oversize lists."""
    cleaned = [name.strip() for name in names]
    if not cleaned:
        raise OvssError(f"{source}: the vocabulary is empty")
    if len(cleaned) > MAX_VOCABULARY:
        raise OvssError(
            f"{source}: {len(cleaned)} names; a label map indexes at most {MAX_VOCABULARY}"
        )
    seen: set[str] = set()
    for position, name in enumerate(cleaned, start=1):
        if not name:
            raise OvssError(f"{source}: name {position} is empty")
        if name in seen:
            raise OvssError(f"{source}: the name {name!r} appears twice")
        seen.add(name)
    return cleaned


def read_classes_file(path: Path) -> list[str]:
    """One name per line; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OvssError(f"{path}: cannot read the classes file ({exc})") from None
    return clean_vocabulary([line for line in text.splitlines() if line.strip()], str(path))


def resolve_vocabulary(
    method: str,
    classes: list[str] | None = None,
    classes_file: Path | None = None,
    classes_from: str | None = None,
) -> list[str]:
    """The vocabulary from exactly one of the three sources."""
    given = [x is not None for x in (classes, classes_file, classes_from)]
    if sum(given) != 1:
        raise OvssError("give exactly one of --classes, --classes-file, --classes-from")
    if classes is not None:
        return clean_vocabulary(classes, "--classes")
    if classes_file is not None:
        return read_classes_file(classes_file)
    dataset = get_dataset(classes_from)
    names, _ = dataset.space_for(get_method(method).label_spaces).vocabulary(method)
    return names
