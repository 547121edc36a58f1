"""Released models by name, one shape for every method, and the one resolver of a ``load``.

Each method package keeps a ``MODELS`` registry in its ``models.py`` (in the spirit of
segment-anything's ``sam_model_registry``)::

    MODELS = ModelRegistry(
        method="san",
        default="san_vit_b_16",
        models={"san_vit_b_16": ModelEntry(name=..., config=..., weights=(WeightsEntry(...),))},
    )

``resolve_model`` turns a ``LoadRequest`` into the config file and weights the method builds
from, the same way for every method:

- ``config``: the request's path, else the config of the model the ``model`` option names
  (default: the registry's default), its ``demo_config`` for the demo pipeline when it has one.
  A ``config`` that is no file but a registry name is read as the ``model`` option.
- ``weights``: the request's path (a file, or a folder for a method whose weights are several
  files); else, when the config came from the registry, the model's released weights fetched
  through the zoo (one file: its path; several: the folder they share); else None.
- ``random_weights``: the option of that name; nothing is fetched then.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovss_common.loading import released_weights, use_random_weights
from ovss_common.protocol import LoadRequest, WorkerError
from ovss_common.zoo import WeightsEntry, WeightsError, fetch, import_file


@dataclass(frozen=True)
class ModelEntry:
    """One released model: the configs it runs with and the weights files it loads.

    Attributes:
        name: the registry name (``"san_vit_b_16"``), the ``model`` load option's value.
        config: the evaluation config shipped with the package.
        weights: the released files the model loads (none: weights come with the config).
        demo_config: the config of the released demo setting, when it differs.
    """

    name: str
    config: Path
    weights: tuple[WeightsEntry, ...] = ()
    demo_config: Path | None = None

    def config_for(self, pipeline: str) -> Path:
        """The config of ``pipeline`` (``eval`` or ``demo``)."""
        if pipeline == "demo" and self.demo_config is not None:
            return self.demo_config
        return self.config


@dataclass(frozen=True)
class ModelRegistry:
    """A method's released models by name, and the one it runs when none is named.

    ``optional`` lists the other files the method may download (mirrors, refinement models),
    so that the zoo listing shows every file and how it is checked.
    """

    method: str
    models: Mapping[str, ModelEntry]
    default: str
    optional: tuple[WeightsEntry, ...] = ()

    def __post_init__(self) -> None:
        if self.default not in self.models:
            raise ValueError(f"{self.method}: default model {self.default!r} is not registered")

    def entry(self, name: str | None = None) -> ModelEntry:
        """The entry called ``name`` (None: the default); ``bad_option`` for an unknown name."""
        name = self.default if name is None else name
        if name not in self.models:
            raise WorkerError(
                "bad_option",
                f"unknown {self.method} model {name!r} (have {', '.join(self.models)})",
                "model",
            )
        return self.models[name]

    def weights_entries(self) -> dict[str, WeightsEntry]:
        """Every weights file of every model, then the optional ones, by zoo name (each once)."""
        files = {w.name: w for entry in self.models.values() for w in entry.weights}
        return {**files, **{w.name: w for w in self.optional}}

    def listing(self) -> list[dict[str, Any]]:
        """The zoo listing: per file, its source, how it is checked, whether it is cached and
        which models load it (none: optional)."""
        return [
            {
                "method": self.method,
                "name": weights.name,
                "models": [n for n, e in self.models.items() if weights in e.weights],
                "url": weights.url,
                "digest": weights.digest_status,
                "cached": weights.path.is_file(),
                "path": str(weights.path),
            }
            for weights in self.weights_entries().values()
        ]


@dataclass(frozen=True)
class ResolvedModel:
    """What a method builds from: a config file and its weights (a file, a folder or None).

    ``model`` is the registry entry the config came from (None for a config path).
    """

    config: str
    weights: str | None
    random_weights: bool
    model: ModelEntry | None = None


def requested_model(request: LoadRequest, registry: ModelRegistry) -> tuple[str | None, str | None]:
    """``(model name, config path)`` of ``request``, at most one of them set: the ``model``
    option, or a ``config`` that is no file but a registry name, or a config path.

    Raises:
        WorkerError: ``bad_option`` for a model option beside a config, or one not a string.
    """
    name = request.options.get("model")
    config = request.config
    if config is not None and not Path(config).is_file() and config in registry.models:
        if name is not None and name != config:
            raise WorkerError("bad_option", "give the model option or a config, not both", "model")
        name, config = config, None
    if name is not None and not isinstance(name, str):
        raise WorkerError("bad_option", "model must be a model name", "model")
    if name is not None and config is not None:
        raise WorkerError("bad_option", "give the model option or a config, not both", "model")
    return name, config


def resolve_model(request: LoadRequest, registry: ModelRegistry) -> ResolvedModel:
    """The config and weights ``request`` asks for (see the module docstring).

    Raises:
        WorkerError: ``bad_option`` for an unknown model, a model option beside a config, or
            random weights beside weights; ``bad_checkpoint`` for released weights that cannot
            be had (offline, failed download, wrong digest).
    """
    name, config = requested_model(request, registry)
    random_weights = use_random_weights(request.options, request.weights)
    if config is not None:
        return ResolvedModel(config=config, weights=request.weights, random_weights=random_weights)
    entry = registry.entry(name)
    weights = request.weights
    if weights is None and not random_weights and entry.weights:
        paths = [Path(released_weights(file)) for file in entry.weights]
        if len({path.parent for path in paths}) > 1:
            raise WorkerError(
                "bad_checkpoint", f"{entry.name}: its weights files are not in one folder"
            )
        weights = str(paths[0]) if len(paths) == 1 else str(paths[0].parent)
    return ResolvedModel(
        config=str(entry.config_for(request.pipeline)),
        weights=weights,
        random_weights=random_weights,
        model=entry,
    )


USAGE = "usage: python -m ovss_common.models MODULE [--names | --fetch NAME | --import NAME FILE]"


def main(argv: list[str] | None = None) -> int:
    """``python -m ovss_common.models MODULE``: the zoo listing of ``MODULE.MODELS`` as one JSON
    object per line (the harness runs it in each method's environment). ``--names``: one
    object, the registry's ``default`` and the names of its ``models``. ``--fetch NAME`` and
    ``--import NAME FILE``: put a weights file into the cache (downloaded, or the user's file,
    checked either way) and print ``{"name", "path"}``, or ``{"error": one line}`` and exit 1."""
    module, *flags = sys.argv[1:] if argv is None else argv
    valid = (
        flags in ([], ["--names"])
        or (len(flags) == 2 and flags[0] == "--fetch")
        or (len(flags) == 3 and flags[0] == "--import")
    )
    if not valid:
        print(USAGE, file=sys.stderr)
        return 2
    registry: ModelRegistry = importlib.import_module(module).MODELS
    if flags == ["--names"]:
        print(json.dumps({"default": registry.default, "models": list(registry.models)}))
        return 0
    if flags:
        entries = registry.weights_entries()
        entry = entries.get(flags[1])
        if entry is None:
            print(json.dumps({"error": f"no weights named {flags[1]!r} ({', '.join(entries)})"}))
            return 1
        try:
            path = fetch(entry) if flags[0] == "--fetch" else import_file(entry, Path(flags[2]))
        except WeightsError as exc:
            print(json.dumps({"error": str(exc)}))
            return 1
        print(json.dumps({"name": entry.name, "path": str(path)}))
        return 0
    for row in registry.listing():
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
