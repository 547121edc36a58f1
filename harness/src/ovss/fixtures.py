"""The golden tiny fixtures of each method package, for ``--tiny`` runs and tests.

Each method package keeps the upstream-generated tiny checkpoint and config under
``packages/<method>/tests/golden/``. They run the whole pipeline on any machine in seconds,
but their weights are untrained: every output made with them says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ovss.environments import get_method
from ovss.errors import OvssError

#: method -> pipeline -> (config, weights) relative to ``tests/golden``.
TINY_FILES = {
    "san": {
        "eval": ("config.yaml", "checkpoint.pth"),
        "demo": ("config.yaml", "checkpoint.pth"),
    },
    "ovseg": {
        "eval": ("config.yaml", "checkpoint.pth"),
        "demo": ("config_demo.yaml", "checkpoint.pth"),
    },
    "car": {
        "eval": ("configs/voc20_voc.yaml", "."),
        "demo": ("configs/voc20_voc.yaml", "."),
    },
}


@dataclass(frozen=True)
class TinyFixture:
    """The default tiny config and weights (a file, or CaR's folder) of one method."""

    method: str
    config: Path
    weights: Path


def tiny(method: str, pipeline: str = "eval") -> TinyFixture:
    """The tiny fixture of ``method`` for ``pipeline``; OvssError when it has none here."""
    if method not in TINY_FILES:
        raise OvssError(f"method {method!r} has no tiny fixture")
    golden = get_method(method).project / "tests" / "golden"
    config, weights = (golden / part for part in TINY_FILES[method][pipeline])
    for path in (config, weights):
        if not path.exists():
            raise OvssError(f"tiny fixture of {method} is incomplete: {path} is missing")
    return TinyFixture(method=method, config=config, weights=weights.resolve())
