"""Benchmark class lists: ``classes/<dataset>.json``, read by the harness and the methods.

Each file gives ``names[i]`` for dataset id ``i``, each method's own spelling of them in
the same order (``methods``), and the sources they were taken from (``classes/README.md``).
"""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.cache
def class_file(name: str) -> dict:
    """The parsed ``classes/<name>.json``; KeyError for an unknown list."""
    folder = resources.files("ovss_common").joinpath("classes")
    entry = folder.joinpath(f"{name}.json")
    if not entry.is_file():
        raise KeyError(f"no class list {name!r}")
    return json.loads(entry.read_text("utf-8"))


def method_names(name: str, method: str) -> list[str]:
    """``method``'s names for the ids of class list ``name``."""
    return list(class_file(name)["methods"][method])
