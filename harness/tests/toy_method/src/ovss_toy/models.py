"""Toy model registry: two named models without weights files (``ovss train``'s default)."""

from pathlib import Path

from ovss_common.models import ModelEntry, ModelRegistry

_HERE = Path(__file__).resolve().parent

MODELS = ModelRegistry(
    method="toy",
    default="toy_small",
    models={
        name: ModelEntry(name=name, config=_HERE / f"{name}.json")
        for name in ("toy_small", "toy_large")
    },
)
