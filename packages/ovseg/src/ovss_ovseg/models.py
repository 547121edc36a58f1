"""OVSeg's released models: name -> config, demo config, weights file (and the default model).

The weights are the authors' Google Drive files; their release notes give an MD5 prefix per
file, checked before a download is moved into place; the zoo records the SHA-256 then and
verifies it on every later use.
"""

from __future__ import annotations

from pathlib import Path

from ovss_common.models import ModelEntry, ModelRegistry
from ovss_common.zoo import WeightsEntry
from ovss_ovseg.config import CONFIG_DIR

_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="


def _released(
    name: str, config: str, drive_id: str, md5_prefix: str, demo_config: str | None = None
) -> ModelEntry:
    weights = WeightsEntry(
        name=name,
        method="ovseg",
        filename=f"{name}.pth",
        url=f"{_DRIVE}{drive_id}",
        md5_prefix=md5_prefix,
        config=str(CONFIG_DIR / config),
    )
    demo: Path | None = CONFIG_DIR / demo_config if demo_config else None
    return ModelEntry(name=name, config=CONFIG_DIR / config, weights=(weights,), demo_config=demo)


MODELS = ModelRegistry(
    method="ovseg",
    default="ovseg_swinbase_vitL14_ft_mpt",
    models={
        "ovseg_swinbase_vitL14_ft_mpt": _released(
            "ovseg_swinbase_vitL14_ft_mpt",
            "ovseg_swinB_vitL.yaml",
            "1cn-ohxgXDrDfkzC1QdO-fi8IjbjXmgKy",
            "526080",
            demo_config="ovseg_swinB_vitL_demo.yaml",
        ),
        "ovseg_R101c_vitB16_ft_mpt": _released(
            "ovseg_R101c_vitB16_ft_mpt",
            "ovseg_R101c_vitB.yaml",
            "1ZmeFMEkhuLqaWkhz4t4IlQ8YflrYja8q",
            "c746f4",
        ),
    },
)
