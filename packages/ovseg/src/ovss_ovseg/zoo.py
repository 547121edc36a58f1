"""OVSeg's released weights (Google Drive; the release notes give an MD5 prefix per file,
checked before a download is moved into place; the SHA-256 is recorded then and verified on
every later use)."""

from __future__ import annotations

from ovss_common.zoo import WeightsEntry
from ovss_ovseg.build import MODEL_CONFIGS

_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="

WEIGHTS = {
    "ovseg_swinbase_vitL14_ft_mpt": WeightsEntry(
        name="ovseg_swinbase_vitL14_ft_mpt",
        method="ovseg",
        filename="ovseg_swinbase_vitL14_ft_mpt.pth",
        url=f"{_DRIVE}1cn-ohxgXDrDfkzC1QdO-fi8IjbjXmgKy",
        md5_prefix="526080",
        config=str(MODEL_CONFIGS["ovseg_swinbase_vitL14_ft_mpt"]),
    ),
    "ovseg_R101c_vitB16_ft_mpt": WeightsEntry(
        name="ovseg_R101c_vitB16_ft_mpt",
        method="ovseg",
        filename="ovseg_R101c_vitB16_ft_mpt.pth",
        url=f"{_DRIVE}1ZmeFMEkhuLqaWkhz4t4IlQ8YflrYja8q",
        md5_prefix="c746f4",
        config=str(MODEL_CONFIGS["ovseg_R101c_vitB16_ft_mpt"]),
    ),
}

#: The model ``ovss`` runs when no config is given.
DEFAULT_MODEL = "ovseg_swinbase_vitL14_ft_mpt"
#: Config of the released demo setting, per model that has one.
DEMO_CONFIGS = {
    "ovseg_swinbase_vitL14_ft_mpt": str(
        MODEL_CONFIGS["ovseg_swinbase_vitL14_ft_mpt"].with_name("ovseg_swinB_vitL_demo.yaml")
    ),
}
