"""Toy model registry: two named models without weights files (``ovss train``'s default), and
one optional weights file, pinned, that no download can reach (``ovss weights`` tests)."""

from pathlib import Path

from ovss_common.models import ModelEntry, ModelRegistry
from ovss_common.zoo import WeightsEntry

_HERE = Path(__file__).resolve().parent

MODELS = ModelRegistry(
    method="toy",
    default="toy_small",
    models={
        name: ModelEntry(name=name, config=_HERE / f"{name}.json")
        for name in ("toy_small", "toy_large")
    },
    optional=(
        WeightsEntry(
            name="toy_weights",
            method="toy",
            filename="toy_weights.json",
            url="http://127.0.0.1:9/toy_weights.json",
            sha256="9c8dbc76130d0b65e0b4d85679348155b18986470fa7c6a4259e8f05bb90b02c",
        ),
    ),
)
