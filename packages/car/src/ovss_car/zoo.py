"""The weights CaR uses: OpenAI's CLIPs, and SAM for the optional refinement.

The CLIPs come from OpenAI's own download URLs, whose path carries the SHA-256 of the file
(as listed in the ``openai-clip`` package's ``clip/clip.py``, ``_MODELS``): those entries are
pinned. Each file there is a TorchScript archive; ``openai_state_dict`` reads its state dict
with ``torch.jit.load`` and reads every other file (a bare state dict, an open_clip
checkpoint of an OpenAI model) with ``weights_only=True``.

``MIRRORS`` keeps the Hugging Face mirror of the same weights (open_clip checkpoints with
OpenAI's keys) as a fallback, because OpenAI's URLs have been reported to answer 404
(openai/CLIP issue 516); nobody states their digest, so they are trust on first use.
"""

from __future__ import annotations

import sys
import warnings
import zipfile
from pathlib import Path

import torch

from ovss_common.checkpoints import CheckpointError, read_state_dict
from ovss_common.downloads import offline
from ovss_common.loading import released_weights
from ovss_common.protocol import WorkerError
from ovss_common.zoo import WeightsEntry

_OPENAI = "https://openaipublic.azureedge.net/clip/models/{}/{}"
_MIRROR = "https://huggingface.co/timm/{}/resolve/main/open_clip_pytorch_model.bin"

#: OpenAI model name (as CaR configs spell it) -> (published SHA-256, OpenAI file name,
#: Hugging Face mirror repository).
_CLIPS = {
    "ViT-B/16": (
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        "ViT-B-16.pt",
        "vit_base_patch16_clip_224.openai",
    ),
    "ViT-L/14": (
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        "ViT-L-14.pt",
        "vit_large_patch14_clip_224.openai",
    ),
}

#: OpenAI model name -> its released TorchScript archive, SHA-256 pinned from the URL.
WEIGHTS = {
    name: WeightsEntry(
        name=name,
        method="car",
        filename=filename,
        url=_OPENAI.format(sha256, filename),
        sha256=sha256,
    )
    for name, (sha256, filename, _) in _CLIPS.items()
}

#: OpenAI model name -> the Hugging Face mirror of the same weights (trust on first use).
MIRRORS = {
    name: WeightsEntry(
        name=f"{name} (mirror)",
        method="car",
        filename=f"openai_{filename.removesuffix('.pt')}.bin",
        url=_MIRROR.format(repository),
    )
    for name, (_, filename, repository) in _CLIPS.items()
}

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


def released_clip(name: str) -> str:
    """The local file of the official CLIP ``name``: OpenAI's pinned archive, else the mirror
    (when it is cached, or online); a one-line ``bad_checkpoint`` when neither can be had."""
    try:
        return released_weights(WEIGHTS[name])
    except WorkerError as failed:
        if offline() and not MIRRORS[name].path.is_file():
            raise
        print(f"ovss: {failed.message}; trying the mirror", file=sys.stderr, flush=True)
        try:
            return released_weights(MIRRORS[name])
        except WorkerError as mirror:
            raise WorkerError(
                "bad_checkpoint", f"{failed.message}; mirror: {mirror.message}", failed.input
            ) from None


def find_checkpoint(name: str, folder: Path | None, config_dir: Path) -> str:
    """The file of the checkpoint a CaR config names.

    In ``folder`` (the ``weights`` folder): the name itself, else, for an official name, the
    OpenAI file name or the mirror's; without a folder, an official name comes from the zoo
    (``released_clip``) and any other name is looked up next to the config.
    """
    if folder is not None:
        candidates = [name]
        if name in WEIGHTS:
            candidates += [WEIGHTS[name].filename, MIRRORS[name].filename]
        for candidate in candidates:
            if (folder / candidate).is_file():
                return str(folder / candidate)
    if name in WEIGHTS:
        return released_clip(name)
    candidate = (folder or config_dir) / name
    if not candidate.is_file():
        raise WorkerError("bad_checkpoint", f"{candidate}: no such checkpoint file", str(candidate))
    return str(candidate)


#: Keys an OpenAI-format ViT CLIP state dict must have (besides the blocks).
REQUIRED_KEYS = (
    "positional_embedding",
    "text_projection",
    "logit_scale",
    "token_embedding.weight",
    "ln_final.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.proj",
    "visual.conv1.weight",
    "visual.ln_pre.weight",
    "visual.ln_post.weight",
)
#: Scalar keys of OpenAI's archives; build_model ignores them.
ARCHIVE_SCALARS = ("input_resolution", "context_length", "vocab_size")


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with compiled code), as OpenAI's
    released CLIP files are, rather than a pickled state dict."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(name.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for name in names)


def _archive_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({reason})") from None
    return {key: value.detach() for key, value in module.state_dict().items()}


def openai_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The OpenAI-format CLIP weights of ``path`` (OpenAI's TorchScript archive, a bare
    OpenAI-format state dict, or an open_clip checkpoint of an OpenAI model): buffers
    open_clip adds (``attn_mask``) dropped."""
    path = Path(path)
    state = (
        _archive_state_dict(path)
        if path.is_file() and is_torchscript_archive(path)
        else read_state_dict(path)
    )
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not an OpenAI-format ViT CLIP (no {missing[0]})")
    prefixes = ("visual.", "transformer.resblocks.", "token_embedding.", "ln_final.")
    singles = {"positional_embedding", "text_projection", "logit_scale", *ARCHIVE_SCALARS}
    return {
        key: value
        for key, value in state.items()
        if (key in singles or key.startswith(prefixes)) and not key.endswith("attn_mask")
    }
