"""A worker whose model is built from a config file and weights, then run by a predictor.

SAN and OVSeg load the same way: check the options, resolve the config and weights through the
method's ``MODELS`` registry (``ovss_common.models``), build the model on the CPU with build
errors mapped to structured ones, move it to the requested device and dtype, and report the
load facts. ``PredictorMethod`` does that once; a method supplies what differs (its builder,
its predictor, the facts it adds, its inspection). Nothing here imports torch at import time.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Any

from ovss_common.images import DecodedImage
from ovss_common.loading import build_errors, check_options, config_overrides, model_provenance
from ovss_common.models import ModelRegistry, resolve_model
from ovss_common.protocol import InspectRequest, LoadRequest, WorkerError
from ovss_common.server import Method, Segmentation
from ovss_common.torch_runtime import (
    configure,
    default_device,
    move,
    peak_device_memory,
    resolve_dtype,
)

#: Largest ``[C, H, W]`` float32 score array a worker holds for one request.
MAX_SCORE_BYTES = 4 << 30


def refuse_large_scores(channels: int, height: int, width: int, field: str, advice: str) -> None:
    """A ``bad_option`` error (naming ``field``) when ``channels`` float32 score maps of
    ``height`` x ``width`` would exceed ``MAX_SCORE_BYTES``; ``advice`` says what to do."""
    size = channels * height * width * 4
    if size > MAX_SCORE_BYTES:
        raise WorkerError(
            "bad_option",
            f"scores for {channels} classes at {height}x{width} would take "
            f"{size / 2**30:.1f} GiB; {advice}",
            field,
        )


class Stopwatch:
    """Seconds spent per named stage, each stage ending at its ``lap``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        """End ``stage`` now (it began at the previous lap or at the start)."""
        now = time.perf_counter()
        self.timings[stage] = now - self._last
        self._last = now


class PredictorMethod(Method):
    """``load`` and ``inspect`` of a config-built model served through a predictor.

    Attributes (set by a subclass):
        models: the method's registry of released models.
        distribution: the method's distribution name (``ovss-san``), for its version.
        label: the method's name in messages (``SAN``).
        options: the load options it accepts.
        config_errors: what reading its config raises besides ``KeyError``/``ValueError``/
            ``TypeError`` (mapped to ``bad_config``).

    After ``load``: ``predictor``, ``pipeline`` and ``device``.
    """

    models: ModelRegistry
    distribution: str
    label: str
    options: tuple[str, ...]
    config_errors: tuple[type[BaseException], ...] = ()

    def option_overrides(self, request: LoadRequest) -> list[str]:
        """Check the method's own load options; the config overrides they imply."""
        return []

    @abstractmethod
    def build(self, config: str, weights: str | None, overrides: list[str]) -> tuple[Any, Any]:
        """``(model, cfg)``: the model of ``config`` plus ``overrides`` on the CPU, with
        ``weights`` loaded (None: random weights)."""

    @abstractmethod
    def make_predictor(self, model: Any, cfg: Any) -> Any:
        """The predictor that runs ``model`` (already on its device)."""

    def describe(self, cfg: Any) -> dict[str, Any]:
        """The load facts the method adds to the common ones."""
        return {}

    @abstractmethod
    def inspect_loaded(self, image: DecodedImage, vocabulary: list[str]) -> dict[str, Any]:
        """The method's inspection of the loaded predictor on ``image``."""

    def load(self, request: LoadRequest) -> dict[str, Any]:
        check_options(request.options, self.options, self.label)
        overrides = config_overrides(request.options) + self.option_overrides(request)
        device = request.device or default_device()
        dtype = resolve_dtype(request.dtype, device)
        runtime = configure(request.threads)
        resolved = resolve_model(request, self.models)
        with build_errors(resolved.config, resolved.weights, self.config_errors):
            model, cfg = self.build(resolved.config, resolved.weights, overrides)
        self.predictor = self.make_predictor(move(model, device, dtype), cfg)
        self.pipeline = request.pipeline
        self.device = device
        facts = model_provenance(
            self.distribution, request, resolved.config, cfg.dump(), resolved.weights
        )
        return {**facts, **self.describe(cfg), "device": device, **runtime}

    def segmentation(self, prediction: Any, scores: Any, details: dict[str, Any]) -> Segmentation:
        """The reply to a segment request: the ``prediction``'s label map, effective vocabulary
        and timings, ``scores`` (a CPU tensor, or None when not saved) and the method's
        ``details`` plus the peak device memory."""
        return Segmentation(
            label_map=prediction.label_map,
            vocabulary=prediction.vocabulary,
            scores=scores.numpy() if scores is not None else None,
            timings=prediction.timings,
            extra={**details, **peak_device_memory(self.device)},
        )

    def inspect(self, image: DecodedImage, request: InspectRequest) -> dict[str, Any]:
        check_options(request.options, (), f"{self.label} inspect")
        return self.inspect_loaded(image, request.vocabulary)
