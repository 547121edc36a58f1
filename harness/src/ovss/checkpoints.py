"""The models of a sweep: each method's default model, or the checkpoints ``--checkpoints``
names for it (``METHOD=CHECKPOINT[,CHECKPOINT...]``, each a released model's name, a path, or
``NAME:PATH``), and the folder each model's results go to."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovss.environments import get_method
from ovss.errors import OvssError
from ovss.worker import ModelSettings, model_settings

#: How ``--checkpoints`` tells a released model's name from a path: a path has a "/" or a ".".
MODEL_NAME = re.compile(r"[A-Za-z0-9_+-]+")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a method, as a ``--checkpoints`` entry names it.

    ``model`` is a released model's name (the method's worker resolves its config and weights);
    ``weights`` is the absolute path of a weights file (CaR: a weights folder), used with the
    method's default config, or with ``model``'s config when both are given. ``label`` names the
    model's folder, ``<method>@<label>``.
    """

    label: str
    model: str | None = None
    weights: str | None = None


def _existing_path(method: str, text: str) -> str:
    if not text.strip():
        raise OvssError(f"--checkpoints: {method}: empty path")
    path = Path(text).expanduser()
    if not path.exists():
        raise OvssError(f"--checkpoints: {method}: {text} does not exist")
    return str(path.resolve())


def parse_checkpoint(method: str, token: str) -> Checkpoint:
    """``NAME`` (a released model), ``PATH`` (a weights file or folder) or ``NAME:PATH``.

    A token with a "/" or a "." is a path, which must exist; anything else is a model name,
    which only the method's worker can check.
    """
    name, colon, rest = token.partition(":")
    if colon and MODEL_NAME.fullmatch(name):
        weights = _existing_path(method, rest)
        return Checkpoint(label=_label(weights), model=name, weights=weights)
    if MODEL_NAME.fullmatch(token):
        return Checkpoint(label=token, model=token)
    weights = _existing_path(method, token)
    return Checkpoint(label=_label(weights), weights=weights)


def _label(path: str) -> str:
    """A weights file's stem, or a weights folder's name."""
    return Path(path).name if Path(path).is_dir() else Path(path).stem


def parse_checkpoints(values: list[str], methods: list[str]) -> dict[str, list[Checkpoint]]:
    """``METHOD=CHECKPOINT[,CHECKPOINT...]`` entries -> each method's checkpoints, in order.

    Refuses an entry without ``=`` or without checkpoints, a method that is unknown or not in
    ``methods``, a path that does not exist and two checkpoints of one method with one label.
    """
    found: dict[str, list[Checkpoint]] = {}
    for value in values:
        method, equals, tokens = value.partition("=")
        method = method.strip()
        if not equals or not method:
            raise OvssError(
                f"--checkpoints: expected METHOD=CHECKPOINT[,CHECKPOINT...], got {value!r}"
            )
        if method not in methods:
            try:
                get_method(method)
            except OvssError as error:
                raise OvssError(f"--checkpoints: {error}") from None
            raise OvssError(f"--checkpoints: {method} is not in --methods ({', '.join(methods)})")
        names = [token.strip() for token in tokens.split(",") if token.strip()]
        if not names:
            raise OvssError(f"--checkpoints: no checkpoint given for {method}")
        found.setdefault(method, []).extend(parse_checkpoint(method, name) for name in names)
    for method, checkpoints in found.items():
        labels = [checkpoint.label for checkpoint in checkpoints]
        twice = next((label for label in labels if labels.count(label) > 1), None)
        if twice is not None:
            raise OvssError(
                f"--checkpoints: two checkpoints of {method} are labelled {twice!r} "
                "(a model name, or a file's stem): their folders would be one"
            )
    return found


@dataclass
class SweepModel:
    """A model of a sweep: its settings and, where ``--checkpoints`` chose it, its label."""

    settings: ModelSettings
    checkpoint: str | None = None

    @property
    def folder(self) -> str:
        """The model's folder under ``OUT/<dataset>``: ``<method>`` or ``<method>@<label>``."""
        method = self.settings.method
        return method if self.checkpoint is None else f"{method}@{self.checkpoint}"

    @property
    def checkpoint_name(self) -> str:
        """The table's checkpoint column: the label, ``default`` or ``tiny``."""
        if self.checkpoint is not None:
            return self.checkpoint
        return "tiny" if self.settings.untrained else "default"


def sweep_models(
    methods: list[str],
    checkpoints: dict[str, list[Checkpoint]],
    *,
    tiny: bool = False,
    timeout: float | None = None,
    **load: Any,
) -> list[SweepModel]:
    """One model per method (its default, or its tiny fixture), or one per checkpoint given.

    With ``tiny``, a checkpoint is a path that replaces the fixture's weights (the tiny config
    stays); a released model's name is refused. ``load`` holds the other ``LoadRequest`` fields.
    """
    models = []
    for method in methods:
        if method not in checkpoints:
            models.append(SweepModel(model_settings(method, tiny=tiny, timeout=timeout, **load)))
            continue
        for checkpoint in checkpoints[method]:
            if tiny:
                if checkpoint.model is not None:
                    raise OvssError(
                        f"--checkpoints: {method}: --tiny takes paths to tiny checkpoints, "
                        f"not the released model {checkpoint.model}"
                    )
                settings = model_settings(method, tiny=True, timeout=timeout, **load)
                settings.load = dataclasses.replace(settings.load, weights=checkpoint.weights)
            else:
                options = {"model": checkpoint.model} if checkpoint.model else {}
                settings = model_settings(
                    method, weights=checkpoint.weights, timeout=timeout, options=options, **load
                )
            models.append(SweepModel(settings, checkpoint.label))
    return models
