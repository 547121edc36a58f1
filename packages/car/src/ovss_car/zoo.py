"""The weights CaR uses: OpenAI's CLIPs (from the shared ``ovss_common.openai_clip``), SAM
for the optional refinement, and where a config's checkpoint names are found.
"""

from __future__ import annotations

from pathlib import Path

from ovss_common.openai_clip import OPENAI_CLIP_MIRRORS, OPENAI_CLIPS, released_clip
from ovss_common.protocol import WorkerError
from ovss_common.zoo import WeightsEntry

_SAM = "https://dl.fbaipublicfiles.com/segment_anything/{}"

#: SAM checkpoints for the optional refinement, by ``sam.model_type``; the publisher's file
#: names carry the first six hex digits of each file's MD5.
SAM_WEIGHTS = {
    model_type: WeightsEntry(
        name=f"sam_{model_type}",
        method="car",
        filename=filename,
        url=_SAM.format(filename),
        md5_prefix=filename.rsplit("_", 1)[1].removesuffix(".pth"),
    )
    for model_type, filename in (
        ("vit_h", "sam_vit_h_4b8939.pth"),
        ("vit_l", "sam_vit_l_0b3195.pth"),
        ("vit_b", "sam_vit_b_01ec64.pth"),
    )
}


def find_checkpoint(name: str, folder: Path | None, config_dir: Path) -> str:
    """The file of the checkpoint a CaR config names.

    In ``folder`` (the ``weights`` folder): the name itself, else, for an official name, the
    OpenAI file name or the mirror's; without a folder, an official name comes from the zoo
    (``released_clip``) and any other name is looked up next to the config.
    """
    if folder is not None:
        candidates = [name]
        if name in OPENAI_CLIPS:
            candidates += [OPENAI_CLIPS[name].filename, OPENAI_CLIP_MIRRORS[name].filename]
        for candidate in candidates:
            if (folder / candidate).is_file():
                return str(folder / candidate)
    if name in OPENAI_CLIPS:
        return released_clip(name)
    candidate = (folder or config_dir) / name
    if not candidate.is_file():
        raise WorkerError("bad_checkpoint", f"{candidate}: no such checkpoint file", str(candidate))
    return str(candidate)
