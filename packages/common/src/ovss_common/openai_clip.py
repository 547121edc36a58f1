"""OpenAI's released CLIPs: one zoo entry per model, and the one reader of their files.

Every method that starts from OpenAI's CLIP weights (CaR's two CLIPs, SAN's CLIP parts when it
trains from scratch) takes them from here, so that one cached copy serves them all
(``<cache dir>/weights/openai-clip/<file>``).

The files come from OpenAI's own download URLs, whose path carries the SHA-256 of the file
(as listed in the ``openai-clip`` package's ``clip/clip.py``, ``_MODELS``): those entries are
pinned. Each file there is a TorchScript archive; ``openai_state_dict`` reads its state dict
with ``torch.jit.load`` and reads every other file (a bare state dict, an open_clip
checkpoint of an OpenAI model) with ``weights_only=True``.

``OPENAI_CLIP_MIRRORS`` keeps the Hugging Face mirror of the same weights (open_clip
checkpoints with OpenAI's keys) as a fallback, because OpenAI's URLs have been reported to
answer 404 (openai/CLIP issue 516); nobody states their digest, so they are trust on first use.

Used by the method workers and trainers; the harness never imports this module, and torch is
imported inside the functions that need it (``ovss_common`` does not depend on torch).
"""

from __future__ import annotations

import sys
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ovss_common.checkpoints import CheckpointError, read_state_dict
from ovss_common.downloads import offline
from ovss_common.loading import released_weights
from ovss_common.protocol import WorkerError
from ovss_common.zoo import WeightsEntry, adopt_earlier_copy

if TYPE_CHECKING:
    import torch

#: The cache sub-folder every OpenAI CLIP file lives in, whichever method uses it.
CACHE_FOLDER = "openai-clip"
#: Where CaR cached them before they were shared: a copy found there is moved into place.
_EARLIER_FOLDERS = ("car",)

_OPENAI = "https://openaipublic.azureedge.net/clip/models/{}/{}"
_MIRROR = "https://huggingface.co/timm/{}/resolve/main/open_clip_pytorch_model.bin"

#: OpenAI model name -> (published SHA-256, OpenAI file name, Hugging Face mirror repository).
_RELEASES = {
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
    "ViT-L/14@336px": (
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
        "ViT-L-14-336px.pt",
        "vit_large_patch14_clip_336.openai",
    ),
}

#: OpenAI model name -> its released TorchScript archive, SHA-256 pinned from the URL.
OPENAI_CLIPS: dict[str, WeightsEntry] = {
    name: WeightsEntry(
        name=name,
        method=CACHE_FOLDER,
        filename=filename,
        url=_OPENAI.format(sha256, filename),
        sha256=sha256,
        moved_from=_EARLIER_FOLDERS,
    )
    for name, (sha256, filename, _) in _RELEASES.items()
}

#: OpenAI model name -> the Hugging Face mirror of the same weights (trust on first use).
OPENAI_CLIP_MIRRORS: dict[str, WeightsEntry] = {
    name: WeightsEntry(
        name=f"{name} (mirror)",
        method=CACHE_FOLDER,
        filename=f"openai_{filename.removesuffix('.pt')}.bin",
        url=_MIRROR.format(repository),
        moved_from=_EARLIER_FOLDERS,
    )
    for name, (_, filename, repository) in _RELEASES.items()
}


def released_clip(name: str) -> str:
    """The local file of OpenAI's CLIP ``name`` (a key of ``OPENAI_CLIPS``): OpenAI's pinned
    archive, else the mirror (when it is cached, or online); a one-line ``bad_checkpoint`` when
    neither can be had. KeyError for a name OpenAI did not release."""
    pinned, mirror = OPENAI_CLIPS[name], OPENAI_CLIP_MIRRORS[name]
    try:
        return released_weights(pinned)
    except WorkerError as failed:
        adopt_earlier_copy(mirror)
        if offline() and not mirror.path.is_file():
            raise
        print(f"ovss: {failed.message}; trying the mirror", file=sys.stderr, flush=True)
        try:
            return released_weights(mirror)
        except WorkerError as other:
            raise WorkerError(
                "bad_checkpoint", f"{failed.message}; mirror: {other.message}", failed.input
            ) from None


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
#: Scalar keys of OpenAI's archives; ``clip.model.build_model`` ignores them.
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
    import torch

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
    open_clip adds (``attn_mask``) dropped.

    Raises:
        CheckpointError: one line naming the file: unreadable, or not an OpenAI-format ViT CLIP
            (naming the first missing key).
    """
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
