"""The golden tiny fixture of each method package, for ``--tiny`` runs and tests.

A method package declares its fixture in ``[tool.ovss.method.tiny]``: per pipeline (and for
``ovss train --tiny``, under ``train``), a config and weights (a file, or a folder for a method
whose weights are several files) relative to its project. They run the whole pipeline on any
machine in seconds, but their weights are untrained: every output made with them says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ovss.environments import PIPELINES, get_method
from ovss.errors import OvssError


@dataclass(frozen=True)
class TinyFixture:
    """The default tiny config and weights of one method."""

    method: str
    config: Path
    weights: Path


def tiny(method: str, pipeline: str = "eval") -> TinyFixture:
    """The tiny fixture of ``method`` for ``pipeline`` (a segment pipeline falls back on the
    eval one; ``train`` does not); OvssError for an unknown method or one without a fixture."""
    package = get_method(method)
    files = package.tiny.get(pipeline)
    if pipeline in PIPELINES:
        files = files or package.tiny.get("eval")
        if files is None:
            raise OvssError(f"method {method!r} declares no tiny fixture ([tool.ovss.method.tiny])")
    elif files is None:
        raise OvssError(
            f"method {method!r} declares no tiny {pipeline} fixture "
            f"([tool.ovss.method.tiny] {pipeline})"
        )
    config, weights = (package.project / part for part in files)
    for path in (config, weights):
        if not path.exists():
            raise OvssError(f"tiny fixture of {method} is incomplete: {path} is missing")
    return TinyFixture(method=method, config=config, weights=weights.resolve())
