"""SAN's released weights (published without checksums: the SHA-256 is recorded on first
download and verified on every later use)."""

from __future__ import annotations

from ovss_common.zoo import WeightsEntry
from ovss_san.build import MODEL_CONFIGS

_RELEASES = "https://huggingface.co/Mendel192/san/resolve/main"

WEIGHTS = {
    name: WeightsEntry(
        name=name,
        method="san",
        filename=f"{name}.pth",
        url=f"{_RELEASES}/{name}.pth",
        config=str(MODEL_CONFIGS[name]),
    )
    for name in ("san_vit_b_16", "san_vit_large_14")
}

#: The model ``ovss`` runs when no config is given.
DEFAULT_MODEL = "san_vit_b_16"
