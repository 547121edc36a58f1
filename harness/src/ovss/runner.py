"""``ovss eval``: run a method over a dataset, resumably, and score it.

Output folder layout::

    OUT/run.json                  cache key and provenance of the run
    OUT/predictions/<stem>.png    16-bit label map in dataset ids (65535 = no class)
    OUT/predictions/<stem>.json   the worker's sidecar (timing, memory) + harness provenance
    OUT/confusion/<stem>.npz      the image's sparse confusion (written last: marks it done)
    OUT/failures.jsonl            images that failed, one JSON object per line
    OUT/worker.log                the worker's stderr
    OUT/metrics.json              metrics over every finished image
    OUT/sem_seg_predictions.json  the predictions as detectron2-style COCO RLE (dataset ids)

Re-running the same command resumes: images with a confusion file are not predicted again.
A folder made by a run with another cache key is refused unless ``restart`` is set.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ovss.datasets import Dataset, LabelSpace, Sample, build_mini_voc, get_dataset
from ovss.environments import MethodPackage, get_method
from ovss.errors import OvssError
from ovss.evaluator import SemSegEvaluator, confusion_file, load_confusion, save_confusion
from ovss.metrics import NO_CLASS, image_confusion
from ovss.provenance import provenance, vocabulary_sha256
from ovss.rle import export_predictions
from ovss.worker import ModelSettings, Worker, WorkerDied, WorkerFailure
from ovss_common.outputs import LabelMapError, read_label_map, write_json, write_label_map
from ovss_common.prompts import VILD_TEMPLATES
from ovss_common.protocol import LoadRequest

#: The name the label spaces give their canonical class names under (no method uses it).
CANONICAL = "canonical"
#: Load options that make a method use the harmonised prompt templates: SAN and OVSeg use
#: the ViLD templates natively; CaR's classifier gets them instead of its own 15.
#: CaR's VOC config also stops swapping VOC names for its longer ones.
HARMONISED_OPTIONS: dict[str, dict[str, Any]] = {
    "car": {"semantic_templates": list(VILD_TEMPLATES), "voc_names": False}
}


@dataclass
class EvalSettings:
    """Everything ``ovss eval`` is told besides the model."""

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
    """The resolved pieces of an evaluation."""

    package: MethodPackage
    dataset: Dataset
    space: LabelSpace
    vocabulary: list[str]
    lut: np.ndarray
    stuff: list[str] | None
    samples: list[Sample]
    load: LoadRequest


def plan_eval(settings: EvalSettings) -> EvalPlan:
    """Resolve the method, dataset, label space and vocabulary of an evaluation.

    Natively a method gets its own label space and class names. Harmonised, every method
    gets the dataset's label space, its canonical class names and the ViLD templates
    (``HARMONISED_OPTIONS``), so that only the models differ.
    """
    package = get_method(settings.model.method)
    dataset = get_dataset(settings.dataset)
    if dataset.name == "mini-voc":
        build_mini_voc(dataset.root_path())
    if settings.harmonised:
        space = dataset.space_for(package.name, settings.label_space or dataset.label_space)
        names_from = CANONICAL
        options = HARMONISED_OPTIONS.get(package.name, {})
    else:
        space = dataset.space_for(package.name, settings.label_space)
        names_from = package.name
        options = {}
    vocabulary, ids = space.vocabulary(names_from)
    return EvalPlan(
        package=package,
        dataset=dataset,
        space=space,
        vocabulary=vocabulary,
        lut=space.prediction_lut(ids),
        stuff=space.stuff_names(names_from),
        samples=dataset.samples(settings.limit),
        load=dataclasses.replace(
            settings.model.load,
            options={
                **dataset.method_options.get(package.name, {}),
                **options,
                **settings.model.load.options,
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


def _claim_folder(out: Path, key: dict[str, Any], restart: bool) -> None:
    run_file = out / "run.json"
    if run_file.is_file() and not restart:
        stored = json.loads(run_file.read_text(encoding="utf-8")).get("cache_key", {})
        differing = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
        if differing:
            raise OvssError(
                f"{out} holds results of another run (differs in {', '.join(differing)}); "
                "use another --out or pass --restart to discard them"
            )
    elif restart:
        for name in ("predictions", "confusion", "failures.jsonl", "metrics.json", "run.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)


class _Run:
    """One evaluation in progress."""

    def __init__(self, settings: EvalSettings, plan: EvalPlan, worker: Worker) -> None:
        self.settings = settings
        self.plan = plan
        self.worker = worker
        self.out = settings.out
        self.provenance = provenance(
            plan.package,
            worker.load_info,
            plan.vocabulary,
            dataset=plan.dataset.name,
            label_space=plan.space.name,
            protocol=settings.protocol,
            definition=settings.definition,
            untrained_weights=settings.model.untrained,
        )
        self.evaluator = SemSegEvaluator(
            plan.space.num_classes,
            plan.space.ignore_label,
            plan.space.class_names,
            settings.definition,
        )
        self.failures: list[dict[str, Any]] = []
        self.model_seconds = 0.0
        self.predicted = 0

    def confusion_path(self, stem: str) -> Path:
        return confusion_file(self.out, stem)

    def predict(self, sample: Sample) -> None:
        """Segment one image, store its prediction in dataset ids and its confusion."""
        work_prefix = self.out / ".work" / sample.stem
        reply = self.worker.request(
            "segment",
            image=str(sample.image),
            vocabulary=self.plan.vocabulary,
            output_prefix=str(work_prefix),
            save_scores=False,
            stuff=self.plan.stuff,
        )
        raw = read_label_map(reply["label_map"])
        if raw.size and raw[raw != NO_CLASS].max(initial=0) >= len(self.plan.vocabulary):
            raise OvssError(f"{sample.stem}: the worker used a class beyond the sent vocabulary")
        prediction = self.plan.lut[raw]
        gt = self.plan.space.convert_gt(read_label_map(sample.label))
        confusion = image_confusion(
            gt, prediction, self.plan.space.num_classes, self.plan.space.ignore_label, sample.stem
        )
        sidecar = json.loads(Path(reply["sidecar"]).read_text(encoding="utf-8"))
        sidecar["harness"] = {**self.provenance, "prediction_ids": "dataset ids"}
        write_label_map(self.out / "predictions" / f"{sample.stem}.png", prediction)
        write_json(self.out / "predictions" / f"{sample.stem}.json", sidecar)
        save_confusion(self.confusion_path(sample.stem), confusion)
        for suffix in (".png", ".json"):
            Path(f"{work_prefix}{suffix}").unlink(missing_ok=True)
        self.evaluator.add(sample.stem, confusion)
        self.model_seconds += float(
            sum(reply["timing"].get(k, 0.0) for k in ("preprocess", "model", "postprocess"))
        )
        self.predicted += 1

    def record_failure(self, sample: Sample, error: Exception) -> None:
        entry = {"stem": sample.stem, "image": str(sample.image), "error": str(error)}
        self.failures.append(entry)
        with (self.out / "failures.jsonl").open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        print(f"ovss: {sample.stem}: {error}", file=sys.stderr)


def run_eval(settings: EvalSettings) -> dict[str, Any]:
    """Run (or resume) an evaluation and write ``metrics.json``; returns the metrics."""
    plan = plan_eval(settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log = settings.out / "worker.log"
    load = dataclasses.asdict(plan.load)
    with Worker(plan.package, load, log, settings.model.timeout) as worker:
        key = cache_key(settings, plan, worker.load_info)
        _claim_folder(settings.out, key, settings.restart)
        (settings.out / "failures.jsonl").unlink(missing_ok=True)
        run = _Run(settings, plan, worker)
        write_json(settings.out / "run.json", {"cache_key": key, "provenance": run.provenance})
        total = len(plan.samples)
        for position, sample in enumerate(plan.samples, start=1):
            done = run.confusion_path(sample.stem)
            if done.is_file():
                run.evaluator.add(sample.stem, load_confusion(done))
                continue
            try:
                run.predict(sample)
            except (WorkerFailure, WorkerDied, OvssError, LabelMapError) as error:
                run.record_failure(sample, error)
                continue
            print(f"ovss: [{position}/{total}] {sample.stem}", file=sys.stderr)
        shutil.rmtree(settings.out / ".work", ignore_errors=True)
        metrics = run.evaluator.evaluate()
        metrics.update(
            {
                "dataset": plan.dataset.name,
                "label_space": plan.space.name,
                "num_failed": len(run.failures),
                "failed": [f["stem"] for f in run.failures],
                "num_predicted_now": run.predicted,
                "restarts": worker.restarts,
                "seconds": {"wall": time.perf_counter() - started, "model": run.model_seconds},
                "provenance": run.provenance,
            }
        )
    write_json(settings.out / "metrics.json", metrics)
    finished = {
        str(sample.image): path
        for sample in plan.samples
        if (path := settings.out / "predictions" / f"{sample.stem}.png").is_file()
        and run.confusion_path(sample.stem).is_file()
    }
    export_predictions(finished, settings.out / "sem_seg_predictions.json")
    return metrics
