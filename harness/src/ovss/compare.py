"""``ovss compare``: every method on one dataset, in one report.

Each method is evaluated with ``ovss eval`` into ``OUT/<method>`` (``OUT`` defaults to
``results/<D>``, where ``ovss eval`` puts its runs: cached predictions are reused and a
re-run only predicts what is missing), then the report gathers, per method:
the metrics under the chosen definition and under the others, per-class IoU, seconds and
peak memory per image, and the images on which the methods disagree most. ``report.py``
writes it as ``report.md``, ``report.html``, ``metrics.csv`` and PNG charts.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ovss.datasets import LabelSpace, Sample, get_dataset
from ovss.engine import EvalSettings, default_out
from ovss.metrics import DEFINITIONS, NO_CLASS, compute_metrics
from ovss.runner import run_evaluation
from ovss.worker import ModelSettings
from ovss_common.outputs import read_label_map


@dataclass
class CompareSettings:
    """What ``ovss compare`` is told: one model per method and the evaluation settings."""

    models: list[ModelSettings]
    dataset: str
    out: Path
    limit: int | None = None
    definition: str = "d2-v0.6"
    harmonised: bool = False
    disagreements: int = 3


@dataclass
class MethodResult:
    """One method's evaluation, as the report needs it.

    Attributes:
        metrics: its ``metrics.json`` (under the chosen definition).
        by_definition: ``mIoU`` under every definition.
        space: the label space it was scored in.
        folder: its ``ovss eval`` folder.
        seconds: model seconds per image (preprocess + model + postprocess).
        peak_rss_bytes: the worker's largest peak resident memory over the images.
        peak_device_bytes: the largest peak accelerator memory, when the worker reports it.
    """

    method: str
    metrics: dict[str, Any]
    by_definition: dict[str, float | None]
    space: LabelSpace
    folder: Path
    untrained: bool
    seconds: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None
    peak_device_bytes: int | None = None

    @property
    def median_seconds(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    def prediction_names(self, stem: str) -> np.ndarray:
        """``[H, W]`` object array of predicted class names (None for no class)."""
        ids = read_label_map(self.folder / "predictions" / f"{stem}.png")
        names = np.array([*self.space.class_names, None], dtype=object)
        return names[np.where(ids == NO_CLASS, len(self.space.class_names), ids)]


@dataclass
class Disagreement:
    """An image and how much the methods' predictions differ on it (0..1)."""

    sample: Sample
    score: float


@dataclass
class Comparison:
    settings: CompareSettings
    results: list[MethodResult]
    disagreements: list[Disagreement]


def _runtime(folder: Path, stems: list[str]) -> tuple[list[float], int | None, int | None]:
    """Per-image model seconds and the peak RSS / device memory from the sidecars."""
    seconds, rss, device = [], [], []
    for stem in stems:
        path = folder / "predictions" / f"{stem}.json"
        if not path.is_file():
            continue
        sidecar = json.loads(path.read_text(encoding="utf-8"))
        timing = sidecar.get("timing", {})
        seconds.append(sum(timing.get(k, 0.0) for k in ("preprocess", "model", "postprocess")))
        if (value := sidecar.get("memory", {}).get("peak_rss_bytes")) is not None:
            rss.append(int(value))
        if (value := sidecar.get("method", {}).get("peak_device_memory_bytes")) is not None:
            device.append(int(value))
    return seconds, max(rss, default=None), max(device, default=None)


def evaluate_method(settings: CompareSettings, model: ModelSettings) -> MethodResult:
    """Run (or resume) ``ovss eval`` for one method and collect what the report shows."""
    folder = settings.out / default_out(settings.dataset, model.method, settings.harmonised).name
    eval_settings = EvalSettings(
        model=model,
        dataset=settings.dataset,
        out=folder,
        limit=settings.limit,
        definition=settings.definition,
        harmonised=settings.harmonised,
    )
    outcome = run_evaluation(eval_settings)
    metrics, space, matrix = outcome.metrics, outcome.space, outcome.confusion
    stems = [sample.stem for sample in get_dataset(settings.dataset).samples(settings.limit)]
    background = 0 if space.unassigned == 0 else None
    by_definition = {
        definition: compute_metrics(
            matrix, definition, space.class_names, background if definition == "car" else None
        )["mIoU"]
        for definition in DEFINITIONS
    }
    seconds, rss, device = _runtime(folder, stems)
    return MethodResult(
        method=model.method,
        metrics=metrics,
        by_definition=by_definition,
        space=space,
        folder=folder,
        untrained=model.untrained,
        seconds=seconds,
        peak_rss_bytes=rss,
        peak_device_bytes=device,
    )


def disagreement(names: list[np.ndarray], valid: np.ndarray) -> float:
    """Mean pairwise fraction of ``valid`` pixels on which two methods name different classes."""
    if len(names) < 2 or not valid.any():
        return 0.0
    fractions = [float((a[valid] != b[valid]).mean()) for a, b in combinations(names, 2)]
    return float(np.mean(fractions))


def scored_pixels(sample: Sample, spaces: list[LabelSpace]) -> np.ndarray:
    """``[H, W]`` bool: pixels every method's label space scores."""
    raw = read_label_map(sample.label)
    valid = np.ones(raw.shape, bool)
    for space in spaces:
        valid &= space.convert_gt(raw) != space.ignore_label
    return valid


def most_disagreed(
    results: list[MethodResult], samples: list[Sample], count: int
) -> list[Disagreement]:
    """The ``count`` images on which the methods disagree most (ties in stem order)."""
    scored = []
    for sample in samples:
        if not all((r.folder / "predictions" / f"{sample.stem}.png").is_file() for r in results):
            continue
        valid = scored_pixels(sample, [r.space for r in results])
        names = [r.prediction_names(sample.stem) for r in results]
        scored.append(Disagreement(sample, disagreement(names, valid)))
    scored.sort(key=lambda d: -d.score)
    return scored[:count]


def run_compare(settings: CompareSettings) -> Comparison:
    """Evaluate every method and pick the disagreement images; the report is written apart."""
    results = [evaluate_method(settings, model) for model in settings.models]
    samples = get_dataset(settings.dataset).samples(settings.limit)
    return Comparison(settings, results, most_disagreed(results, samples, settings.disagreements))
