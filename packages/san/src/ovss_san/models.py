"""SAN's released models: name -> config, weights file (and the default model).

The weights are the authors' Hugging Face files, which publish no checksum: the zoo records the
SHA-256 on first download and verifies it on every later use (trust on first use).
"""

from __future__ import annotations

from ovss_common.models import ModelEntry, ModelRegistry
from ovss_common.zoo import WeightsEntry
from ovss_san.config import CONFIG_DIR

_RELEASES = "https://huggingface.co/Mendel192/san/resolve/main"


def _released(name: str) -> ModelEntry:
    config = CONFIG_DIR / f"{name}.yaml"
    weights = WeightsEntry(
        name=name,
        method="san",
        filename=f"{name}.pth",
        url=f"{_RELEASES}/{name}.pth",
        config=str(config),
    )
    return ModelEntry(name=name, config=config, weights=(weights,))


MODELS = ModelRegistry(
    method="san",
    default="san_vit_b_16",
    models={name: _released(name) for name in ("san_vit_b_16", "san_vit_large_14")},
)
