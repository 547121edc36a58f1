"""The evaluation engine: one (model, dataset) run folder, claimed, predicted and finished.

Run folder layout (``ovss eval``, every ``ovss sweep`` model and ``ovss reproduce`` target)::

    OUT/run.json                  cache key and provenance of the run
    OUT/predictions/<stem>.png    16-bit label map in dataset ids (65535 = no class)
    OUT/predictions/<stem>.json   the worker's sidecar, with the harness provenance
    OUT/confusion/<stem>.npz      the image's sparse confusion (written last: marks it done)
    OUT/failures.jsonl            images without a confusion file, and why
    OUT/metrics.json              metrics over every finished image
    OUT/sem_seg_predictions.json  the predictions as detectron2-style COCO RLE (dataset ids)

An ``Evaluation`` does the three steps every caller shares:

1. ``claim``: refuse a folder that holds another run (another cache key), or discard it with
   ``restart``; record the run in ``run.json``.
2. ``predict``: segment pending images (those without a confusion file) in a worker that
   writes each label map once, in dataset ids, then store each image's confusion.
3. ``finish``: sum the stored confusions of every sample (never averaging partial figures),
   score them, and write ``metrics.json``, ``failures.jsonl`` and ``sem_seg_predictions.json``.

``ovss eval`` runs them in one process; a sweep runs ``predict`` in one Ray task per shard and
``finish`` once in its driver; ``ovss reproduce`` reads ``finish``'s ``Outcome``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovss.datasets import Dataset, LabelSpace, Sample, build_mini_voc, get_dataset
from ovss.environments import MethodPackage, get_method
from ovss.errors import OvssError
from ovss.evaluator import SemSegEvaluator, confusion_file, load_confusion, save_confusion
from ovss.metrics import image_confusion
from ovss.provenance import provenance, vocabulary_sha256
from ovss.rle import export_predictions
from ovss.worker import ModelSettings, Worker, WorkerDied, WorkerFailure
from ovss_common.outputs import LabelMapError, read_label_map, write_json
from ovss_common.protocol import LoadRequest, SegmentRequest

#: The name the label spaces give their canonical class names under (no method uses it).
CANONICAL = "canonical"
#: What ``restart`` discards from a run folder.
RUN_FILES = ("predictions", "confusion", "failures.jsonl", "metrics.json", "run.json")
#: Cache-key fields that are known without starting a worker.
STATIC_KEY_FIELDS = (
    "method",
    "dataset",
    "label_space",
    "vocabulary_sha256",
    "pipeline",
    "dtype",
    "protocol",
    "options",
)


@dataclass
class EvalSettings:
    """A model on a dataset, and where and how its run folder is scored."""

    model: ModelSettings
    dataset: str
    out: Path
    limit: int | None = None
    definition: str = "d2-v0.6"
    label_space: str | None = None
    restart: bool = False
    harmonised: bool = False

    @property
    def protocol(self) -> str:
        """``native`` (each method's own names, label space and templates) or ``harmonised``."""
        return "harmonised" if self.harmonised or self.label_space else "native"


def default_out(dataset: str, method: str, harmonised: bool = False) -> Path:
    """``results/<dataset>/<method>`` (``<method>-harmonised`` for the harmonised protocol)."""
    return Path("results") / dataset / (f"{method}-harmonised" if harmonised else method)


@dataclass
class EvalPlan:
    """The resolved pieces of an evaluation: the vocabulary sent and the dataset id of each
    of its names (``label_ids``)."""

    package: MethodPackage
    dataset: Dataset
    space: LabelSpace
    vocabulary: list[str]
    label_ids: list[int]
    stuff: list[str] | None
    samples: list[Sample]
    load: LoadRequest


def plan_eval(settings: EvalSettings) -> EvalPlan:
    """Resolve the method, dataset, label space and vocabulary of an evaluation.

    Natively a method gets the label space its package declares for the dataset, its own
    class names and the load options its package declares for the dataset. Harmonised, every
    method gets the dataset's label space, its canonical class names and the package's
    harmonised options (the ViLD templates), so that only the models differ. Options the
    user gives win.
    """
    package = get_method(settings.model.method)
    dataset = get_dataset(settings.dataset)
    if dataset.name == "mini-voc":
        build_mini_voc(dataset.root_path())
    if settings.harmonised:
        space = dataset.space_for(override=settings.label_space or dataset.label_space)
        names_from = CANONICAL
        options = package.harmonised_options
    else:
        space = dataset.space_for(package.label_spaces, settings.label_space)
        names_from = package.name
        options = {}
    vocabulary, ids = space.vocabulary(names_from)
    load = settings.model.load
    return EvalPlan(
        package=package,
        dataset=dataset,
        space=space,
        vocabulary=vocabulary,
        label_ids=[int(i) for i in ids],
        stuff=space.stuff_names(names_from),
        samples=dataset.samples(settings.limit),
        load=dataclasses.replace(
            load,
            options={
                **package.dataset_options.get(dataset.name, {}),
                **options,
                **load.options,
            },
        ),
    )


def cache_key(settings: EvalSettings, plan: EvalPlan, load_info: dict[str, Any]) -> dict[str, Any]:
    """What decides the predictions: a stored run with another key cannot be resumed."""
    return {
        "method": plan.package.name,
        "package_version": load_info.get("package_version") or plan.package.version,
        "weights_sha256": load_info.get("weights_sha256"),
        "config_sha256": load_info.get("config_sha256"),
        "dataset": plan.dataset.name,
        "label_space": plan.space.name,
        "vocabulary_sha256": vocabulary_sha256(plan.vocabulary),
        "pipeline": plan.load.pipeline,
        "dtype": plan.load.dtype,
        "protocol": settings.protocol,
        "options": plan.load.options,
    }


@dataclass
class Progress:
    """What one ``predict`` call did: images predicted, failures (stem, image, error), the
    worker's restarts and model seconds."""

    predicted: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    restarts: int = 0
    model_seconds: float = 0.0


@dataclass
class Outcome:
    """A finished run folder: its metrics (as written to ``metrics.json``), the summed
    ``[K, K]`` confusion matrix of its finished images and the label space of its K classes."""

    metrics: dict[str, Any]
    confusion: np.ndarray
    space: LabelSpace


class Evaluation:
    """One run folder of one (model, dataset): claim it, predict what is pending, finish it."""

    def __init__(self, settings: EvalSettings, plan: EvalPlan | None = None) -> None:
        self.settings = settings
        self.plan = plan_eval(settings) if plan is None else plan
        self.out = settings.out

    def provenance(self, load_info: dict[str, Any]) -> dict[str, Any]:
        """The run's provenance (method, weights, dataset, protocol, definition, ...)."""
        return provenance(
            self.plan.package,
            load_info,
            self.plan.vocabulary,
            dataset=self.plan.dataset.name,
            label_space=self.plan.space.name,
            protocol=self.settings.protocol,
            definition=self.settings.definition,
            untrained_weights=self.settings.model.untrained,
        )

    def check(self, key: dict[str, Any], fields: Iterable[str] | None = None) -> None:
        """Refuse a folder whose ``run.json`` holds another run (compared on ``fields``, or
        on every field of both keys)."""
        run_file = self.out / "run.json"
        if not run_file.is_file():
            return
        try:
            stored = json.loads(run_file.read_text(encoding="utf-8")).get("cache_key", {})
        except (OSError, ValueError, AttributeError) as error:
            raise OvssError(
                f"{run_file}: unreadable ({error}); pass --restart or use another --out"
            ) from None
        names = set(fields) if fields is not None else set(stored) | set(key)
        differing = sorted(k for k in names if stored.get(k) != key.get(k))
        if differing:
            raise OvssError(
                f"{self.out} holds results of another run (differs in {', '.join(differing)}); "
                "use another --out or pass --restart to discard them"
            )

    def check_static(self) -> None:
        """``check`` on the key fields known without a worker (before any task starts)."""
        self.check(cache_key(self.settings, self.plan, {}), STATIC_KEY_FIELDS)

    def discard(self) -> None:
        """Delete the results of an earlier run in the folder."""
        for name in RUN_FILES:
            target = self.out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    def claim(self, load_info: dict[str, Any]) -> dict[str, Any]:
        """Take the folder for this run (discarding an earlier one with ``restart``, refusing
        another run's otherwise) and record it in ``run.json``; returns the provenance."""
        key = cache_key(self.settings, self.plan, load_info)
        if self.settings.restart:
            self.discard()
        else:
            self.check(key)
        record = self.provenance(load_info)
        write_json(self.out / "run.json", {"cache_key": key, "provenance": record})
        return record

    def pending(self, stems: Iterable[str] | None = None) -> list[Sample]:
        """The samples (of ``stems`` only, when given) without a confusion file, in order."""
        wanted = None if stems is None else set(stems)
        return [
            sample
            for sample in self.plan.samples
            if (wanted is None or sample.stem in wanted)
            and not confusion_file(self.out, sample.stem).is_file()
        ]

    def worker(self, log: Path) -> Worker:
        """A worker of the plan's method with the plan's load request (a context manager)."""
        load = dataclasses.asdict(self.plan.load)
        return Worker(self.plan.package, load, log, self.settings.model.timeout)

    def predict(
        self,
        worker: Worker,
        samples: list[Sample],
        record: dict[str, Any],
        on_done: Callable[[Sample], None] | None = None,
        on_failure: Callable[[Sample, Exception], None] | None = None,
    ) -> Progress:
        """Segment ``samples`` in ``worker`` (claimed with provenance ``record``), skipping any
        another process finished meanwhile; a failed image is recorded and the rest go on."""
        progress = Progress()
        restarts = worker.restarts
        for sample in samples:
            if confusion_file(self.out, sample.stem).is_file():
                if on_done is not None:
                    on_done(sample)
                continue
            try:
                progress.model_seconds += self._predict_one(worker, sample, record)
            except (WorkerFailure, WorkerDied, OvssError, LabelMapError) as error:
                progress.failed.append(
                    {"stem": sample.stem, "image": str(sample.image), "error": str(error)}
                )
                if on_failure is not None:
                    on_failure(sample, error)
                continue
            progress.predicted += 1
            if on_done is not None:
                on_done(sample)
        progress.restarts = worker.restarts - restarts
        return progress

    def _predict_one(self, worker: Worker, sample: Sample, record: dict[str, Any]) -> float:
        """Segment one image, its label map written once in dataset ids, then store its
        confusion; returns the model seconds."""
        space = self.plan.space
        reply = worker.segment(
            SegmentRequest(
                image=str(sample.image),
                vocabulary=self.plan.vocabulary,
                output_prefix=str(self.out / "predictions" / sample.stem),
                stuff=self.plan.stuff,
                label_ids=self.plan.label_ids,
                unassigned_id=space.unassigned,
                provenance={**record, "prediction_ids": "dataset ids"},
            )
        )
        prediction = read_label_map(reply["label_map"])
        gt = space.convert_gt(read_label_map(sample.label))
        confusion = image_confusion(
            gt, prediction, space.num_classes, space.ignore_label, sample.stem
        )
        save_confusion(confusion_file(self.out, sample.stem), confusion)
        timing = reply["timing"]
        return float(sum(timing.get(k, 0.0) for k in ("preprocess", "model", "postprocess")))

    def finish(
        self, progress: Iterable[Progress], wall: float, errors: dict[str, str] | None = None
    ) -> Outcome:
        """Sum the stored confusions of every sample, score them and write the run's files.

        ``errors`` gives, per stem, why an image is unfinished where no ``progress`` says so
        (a task that died); other unfinished images are "not predicted".
        """
        progress = list(progress)
        plan = self.plan
        evaluator = SemSegEvaluator(
            plan.space.num_classes,
            plan.space.ignore_label,
            plan.space.class_names,
            self.settings.definition,
        )
        finished: dict[str, Path] = {}
        missing: list[Sample] = []
        for sample in plan.samples:
            path = confusion_file(self.out, sample.stem)
            if path.is_file():
                evaluator.add(sample.stem, load_confusion(path))
                finished[str(sample.image)] = self.out / "predictions" / f"{sample.stem}.png"
            else:
                missing.append(sample)
        why = dict(errors or {})
        why.update({f["stem"]: f["error"] for p in progress for f in p.failed})
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "failures.jsonl").unlink(missing_ok=True)
        if missing:
            lines = [
                json.dumps(
                    {
                        "stem": s.stem,
                        "image": str(s.image),
                        "error": why.get(s.stem, "not predicted"),
                    },
                    ensure_ascii=False,
                )
                for s in missing
            ]
            (self.out / "failures.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        run_file = self.out / "run.json"
        record = (
            json.loads(run_file.read_text(encoding="utf-8")).get("provenance")
            if run_file.is_file()
            else None
        )
        metrics = evaluator.evaluate()
        metrics.update(
            {
                "dataset": plan.dataset.name,
                "label_space": plan.space.name,
                "num_failed": len(missing),
                "failed": [s.stem for s in missing],
                "num_predicted_now": sum(p.predicted for p in progress),
                "restarts": sum(p.restarts for p in progress),
                "seconds": {"wall": wall, "model": sum(p.model_seconds for p in progress)},
                "provenance": record,
            }
        )
        shutil.rmtree(self.out / ".work", ignore_errors=True)
        write_json(self.out / "metrics.json", metrics)
        export_predictions(finished, self.out / "sem_seg_predictions.json")
        return Outcome(metrics, evaluator.matrix, plan.space)
