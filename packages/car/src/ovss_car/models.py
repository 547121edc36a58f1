"""CaR's released settings by name, in the shape every method shares (``ovss_common.models``).

CaR trains nothing: a released setting is one of the configs of the original repository
(google-research/google-research, ``clip_as_rnn/configs/``), shipped in ``configs/``; each
names its two OpenAI CLIPs, whose pinned zoo entries (``ovss_common.openai_clip``, one cached
copy shared with the other methods) are the model's weights. The default is the VOC config.
"""

from __future__ import annotations

from ovss_car.config import CONFIG_DIR, load_config, shipped_configs
from ovss_car.zoo import SAM_WEIGHTS
from ovss_common.models import (
    ModelEntry,
    ModelRegistry,
    ResolvedModel,
    requested_model,
    resolve_model,
)
from ovss_common.openai_clip import OPENAI_CLIP_MIRRORS, OPENAI_CLIPS
from ovss_common.protocol import LoadRequest, WorkerError


def _entry(name: str) -> ModelEntry:
    config = load_config(CONFIG_DIR / f"{name}.yaml")
    checkpoints = (config.cam_checkpoint, config.semantic_checkpoint)
    return ModelEntry(
        name=name, config=config.path, weights=tuple(OPENAI_CLIPS[c] for c in checkpoints)
    )


_MODELS = {name: _entry(name) for name in shipped_configs()}
#: The OpenAI CLIPs the shipped configs name (their mirrors are listed as optional files).
_CLIPS = dict.fromkeys(weights.name for entry in _MODELS.values() for weights in entry.weights)

MODELS = ModelRegistry(
    method="car",
    default="voc",
    models=_MODELS,
    optional=(*(OPENAI_CLIP_MIRRORS[name] for name in _CLIPS), *SAM_WEIGHTS.values()),
)


def resolve(request: LoadRequest) -> ResolvedModel:
    """``resolve_model`` for CaR: the config file, and the folder in which its checkpoints
    are looked up (the request's, or the zoo's for a released setting).

    When OpenAI's pinned files of a released setting cannot be had, the folder is left out:
    the worker then looks each checkpoint up through ``ovss_car.zoo.find_checkpoint``, which
    falls back to the mirror.
    """
    try:
        return resolve_model(request, MODELS)
    except WorkerError as exc:
        if exc.type != "bad_checkpoint" or request.weights is not None:
            raise
    name, _ = requested_model(request, MODELS)
    entry = MODELS.entry(name)
    return ResolvedModel(config=str(entry.config), weights=None, random_weights=False, model=entry)
