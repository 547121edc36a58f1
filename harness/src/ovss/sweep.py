"""``ovss sweep``: evaluate models x datasets as Ray tasks, one per (model, dataset, shard).

Each task runs in the harness environment (the only one with Ray) and runs the evaluation
engine (``ovss.engine``) over its shard of the dataset's sorted samples, with its method's
worker subprocess in the method's own environment, exactly as ``ovss eval`` does, into the
model's shared folder ``OUT/<dataset>/<folder>/`` (``ovss.checkpoints.SweepModel`` names it).
Images with a confusion file are never predicted again, so a killed task (or a killed sweep)
re-runs only its unfinished images, and re-running a finished sweep predicts nothing.

When every task of a (model, dataset) has ended, the driver finishes its folder once: the
stored confusion matrices are summed (never averaging shard figures) into ``metrics.json`` and
``sem_seg_predictions.json``, the same numbers as a single-process ``ovss eval``.
``OUT/sweep.json`` and ``OUT/table.md`` hold the table. The cluster is ``ovss.ray_cluster``'s;
each task draws a progress bar in the driver's terminal (one line per image where stderr is
not a terminal).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovss.checkpoints import SweepModel, parse_checkpoints, sweep_models
from ovss.datasets import Sample, datasets_root
from ovss.engine import EvalSettings, Evaluation, Outcome, Progress
from ovss.environments import method_names
from ovss.errors import OvssError
from ovss.metrics import DEFAULT_DEFINITION, DEFINITIONS
from ovss.ray_cluster import check_device, import_ray, start_ray, task_resources
from ovss.vocabulary import clean_vocabulary
from ovss.worker import WorkerFailure
from ovss_common.outputs import write_json
from ovss_common.quiet import QUIET_ENV

#: Environment variables a task needs to see the driver's datasets, config and methods.
FORWARDED_ENV = (
    "DETECTRON2_DATASETS",
    "OVSS_CONFIG_DIR",
    "OVSS_METHOD_DIRS",
    "OVSS_OFFLINE",
    "HF_HUB_OFFLINE",
    "UV_OFFLINE",
    "UV_PYTHON_DOWNLOADS",
)


def shard_stems(stems: list[str], shards: int) -> list[list[str]]:
    """Split the sorted ``stems`` into at most ``shards`` contiguous parts of ceil(n / shards).

    No stem is dropped; trailing empty parts are left out.
    """
    if shards < 1:
        raise OvssError(f"--shards must be positive, got {shards}")
    ordered = sorted(stems)
    size = max(1, math.ceil(len(ordered) / shards))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


@dataclass
class SweepSettings:
    """A sweep: models x datasets, sharded, on an embedded or existing Ray cluster.

    ``dashboard`` starts Ray's dashboard with an embedded Ray; ``progress_bars`` draws a bar per
    task (None: where stderr is a terminal), else each task prints one line per image.
    """

    models: list[SweepModel]
    datasets: list[str]
    out: Path
    workers: int = 2
    shards: int | None = None
    address: str | None = None
    definition: str = DEFAULT_DEFINITION
    limit: int | None = None
    max_retries: int = 2
    dashboard: bool = True
    progress_bars: bool | None = None

    @property
    def num_shards(self) -> int:
        return self.shards or self.workers


@dataclass
class ShardTask:
    """One Ray task: a shard of one (model, dataset)."""

    settings: EvalSettings
    stems: list[str]
    label: str
    env: dict[str, str] = field(default_factory=dict)
    progress_bar: bool = False


@dataclass
class ShardResult:
    """What a task reports: its progress, and why it stopped early when it did
    (``load_failed``: its model could not be loaded)."""

    label: str
    images: int
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    unfinished: list[str] = field(default_factory=list)
    load_failed: bool = False

    def summary(self) -> dict[str, Any]:
        """The task's line in ``sweep.json``."""
        entry: dict[str, Any] = {
            "label": self.label,
            "images": self.images,
            "predicted": self.progress.predicted,
            "failed": [{"stem": f["stem"], "error": f["error"]} for f in self.progress.failed],
            "restarts": self.progress.restarts,
            "model_seconds": self.progress.model_seconds,
        }
        if self.error is not None:
            entry.update(error=self.error, unfinished=self.unfinished, load_failed=self.load_failed)
        return entry


def _progress_bar(label: str, total: int, done: int) -> Any:
    """A task's progress bar, drawn by the Ray driver (``tqdm_ray``), at ``done`` of ``total``."""
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(desc=label, total=total, unit="img")
    bar.n = done
    bar.refresh()
    return bar


def run_shard(task: ShardTask) -> ShardResult:
    """Predict the unfinished images of one shard (the body of a Ray task).

    Starts no worker when every image of the shard is finished. A worker that cannot load its
    model ends the task with ``load_failed``.
    """
    os.environ.update({**task.env, **QUIET_ENV})
    evaluation = Evaluation(task.settings)
    pending = evaluation.pending(task.stems)
    result = ShardResult(label=task.label, images=len(task.stems))
    if not pending:
        return result
    out = task.settings.out
    out.mkdir(parents=True, exist_ok=True)
    done = len(task.stems) - len(pending)
    bar = _progress_bar(task.label, len(task.stems), done) if task.progress_bar else None

    def finished(sample: Sample) -> None:
        if bar is None:
            print(f"ovss: {task.label}: {sample.stem} done", file=sys.stderr, flush=True)
        else:
            bar.update(1)

    def failed(sample: Sample, error: Exception) -> None:
        print(f"ovss: {task.label}: {sample.stem} failed: {error}", file=sys.stderr)

    log = out / "logs" / f"worker-{task.label.replace('/', '_')}.log"
    try:
        with evaluation.worker(log) as worker:
            record = evaluation.claim(worker.load_info)
            result.progress = evaluation.predict(worker, pending, record, finished, failed)
    except OvssError as error:
        result.error = str(error)
        result.unfinished = [s.stem for s in evaluation.pending(task.stems)]
        result.load_failed = isinstance(error, WorkerFailure) and error.request_type == "load"
    finally:
        if bar is not None:
            bar.close()
    return result


def _format_table(rows: list[dict[str, Any]]) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines = [
        "| method | checkpoint | dataset | label space | mIoU | fwIoU | mACC | pACC | images "
        "| failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['checkpoint']} | {row['dataset']} | {row['label_space']} | "
            f"{number(row['mIoU'])} | {number(row['fwIoU'])} | {number(row['mACC'])} | "
            f"{number(row['pACC'])} | {row['num_images']} | {row['num_failed']} |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class _Job:
    """One (model, dataset) of a sweep: its run folder and its tasks' results."""

    model: SweepModel
    evaluation: Evaluation
    tasks: list[ShardTask]
    results: list[ShardResult] = field(default_factory=list)


@dataclass
class SweepOutcome:
    """A finished sweep: the summary written to ``sweep.json`` and each folder's outcome, in
    the order of its ``results`` rows."""

    summary: dict[str, Any]
    outcomes: list[Outcome]


def _jobs(settings: SweepSettings, env: dict[str, str], bars: bool) -> list[_Job]:
    """Plan every (model, dataset): checks methods, datasets, files and the folders' earlier
    runs before Ray starts."""
    jobs = []
    for dataset in settings.datasets:
        for model in settings.models:
            evaluation = Evaluation(
                EvalSettings(
                    model=model.settings,
                    dataset=dataset,
                    out=(settings.out / dataset / model.folder).resolve(),
                    limit=settings.limit,
                    definition=settings.definition,
                )
            )
            evaluation.check_static()
            parts = shard_stems([s.stem for s in evaluation.plan.samples], settings.num_shards)
            tasks = [
                ShardTask(
                    settings=evaluation.settings,
                    stems=stems,
                    label=f"{model.folder}/{dataset}/shard{index + 1}of{len(parts)}",
                    env=env,
                    progress_bar=bars,
                )
                for index, stems in enumerate(parts)
            ]
            jobs.append(_Job(model, evaluation, tasks))
    return jobs


def execute_sweep(settings: SweepSettings) -> SweepOutcome:
    """Run (or resume) a sweep; writes ``OUT/sweep.json`` and ``OUT/table.md``."""
    if settings.workers < 1:
        raise OvssError(f"--workers must be positive, got {settings.workers}")
    started = time.perf_counter()
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    env["DETECTRON2_DATASETS"] = str(datasets_root().resolve())
    bars = sys.stderr.isatty() if settings.progress_bars is None else settings.progress_bars
    jobs = _jobs(settings, env, bars)
    ray = import_ray()
    own_ray, dashboard = start_ray(settings.workers, settings.address, settings.dashboard)
    try:
        devices = {model.settings.load.device for model in settings.models}
        options = task_resources(ray.cluster_resources(), "cpu" if devices == {"cpu"} else None)
        if "num_gpus" not in options and settings.address is None:
            threads = max(1, (os.cpu_count() or 1) // settings.workers)
            for job in jobs:
                model = job.evaluation.settings.model
                if model.load.threads is None:
                    model.load = dataclasses.replace(model.load, threads=threads)
        remote = ray.remote(run_shard).options(max_retries=settings.max_retries, **options)
        pending = {remote.remote(task): (job, task) for job in jobs for task in job.tasks}
        total, ended = len(pending), 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job, task = pending.pop(ready[0])
            ended += 1
            try:
                result = ray.get(ready[0])
                outcome = result.error or (
                    f"{result.progress.predicted} predicted, {len(result.progress.failed)} failed"
                )
            except Exception as error:  # a task that died beyond its retries or raised
                text = str(error).strip()
                outcome = text.splitlines()[-1] if text else repr(error)
                result = ShardResult(
                    label=task.label, images=len(task.stems), error=outcome, unfinished=task.stems
                )
            print(f"ovss: sweep [{ended}/{total}] {task.label}: {outcome}", file=sys.stderr)
            job.results.append(result)
    finally:
        if own_ray:
            ray.shutdown()
    rows, outcomes = [], []
    wall = time.perf_counter() - started
    for job in jobs:
        errors = {stem: r.error for r in job.results if r.error for stem in r.unfinished}
        finished = job.evaluation.finish([r.progress for r in job.results], wall, errors)
        metrics = finished.metrics
        outcomes.append(finished)
        rows.append(
            {
                "method": job.model.settings.method,
                "checkpoint": job.model.checkpoint_name,
                "dataset": job.evaluation.settings.dataset,
                **{
                    k: metrics[k]
                    for k in ("label_space", "mIoU", "fwIoU", "mACC", "pACC", "definition")
                },
                "num_images": metrics["num_images"],
                "num_failed": metrics["num_failed"],
                "num_predicted_now": metrics["num_predicted_now"],
                "metrics": str(job.evaluation.out / "metrics.json"),
            }
        )
    summary = {
        "workers": settings.workers,
        "shards": settings.num_shards,
        "address": settings.address,
        "dashboard": dashboard,
        "resources": options,
        "seconds": time.perf_counter() - started,
        "results": rows,
        "tasks": [result.summary() for job in jobs for result in job.results],
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(settings.out / "sweep.json", summary)
    (settings.out / "table.md").write_text(_format_table(rows), encoding="utf-8")
    return SweepOutcome(summary, outcomes)


def run_sweep(settings: SweepSettings) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the summary also written to ``OUT/sweep.json``."""
    return execute_sweep(settings).summary


def _names(values: list[str], what: str) -> list[str]:
    """``a,b c`` -> ``[a, b, c]`` (commas or spaces), stripped, no empties or repeats."""
    return clean_vocabulary([p for v in values for p in v.split(",") if p.strip()], what)


HELP = "methods x datasets as sharded Ray tasks"


def add_arguments(sweep: argparse.ArgumentParser) -> None:
    """The arguments of ``ovss sweep``."""
    sweep.add_argument("--methods", nargs="+", help="e.g. san,car (default: every method)")
    sweep.add_argument("--datasets", nargs="+", required=True, help="e.g. mini-voc,voc-20")
    sweep.add_argument(
        "--checkpoints",
        nargs="+",
        action="extend",
        default=[],
        metavar="METHOD=CKPT[,CKPT...]",
        help="checkpoints of a method, each a model (san_vit_large_14), a path or MODEL:PATH",
    )
    sweep.add_argument("--tiny", action="store_true", help="golden tiny fixtures (untrained)")
    sweep.add_argument("--shards", type=int, help="shards per (model, dataset); default --workers")
    sweep.add_argument("--workers", type=int, default=2, help="CPU slots of the embedded Ray")
    sweep.add_argument("--address", help="join this Ray cluster (e.g. 10.0.0.1:6379, auto)")
    sweep.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="start the embedded Ray without its dashboard",
    )
    sweep.add_argument("--limit", type=int, help="first N samples of each dataset")
    sweep.add_argument("--definition", choices=DEFINITIONS, default=DEFAULT_DEFINITION)
    sweep.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    sweep.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    sweep.add_argument("--threads", type=int, help="CPU threads of each worker")
    sweep.add_argument(
        "--timeout",
        type=float,
        help="seconds a worker may take to load or per image (default: the method's deadlines)",
    )
    sweep.add_argument("--out", type=Path, default=Path("results") / "sweep")


def command(args: argparse.Namespace) -> int:
    """Run ``ovss sweep``: print the table; exit 1 when some image is unfinished."""
    check_device(args.device)
    methods = _names(args.methods, "--methods") if args.methods else method_names()
    models = sweep_models(
        methods,
        parse_checkpoints(args.checkpoints, methods),
        tiny=args.tiny,
        timeout=args.timeout,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
    )
    summary = run_sweep(
        SweepSettings(
            models=models,
            datasets=_names(args.datasets, "--datasets"),
            out=args.out,
            workers=args.workers,
            shards=args.shards,
            address=args.address,
            definition=args.definition,
            limit=args.limit,
            dashboard=args.dashboard,
        )
    )
    print(_format_table(summary["results"]), end="")
    print(f"sweep -> {args.out / 'sweep.json'}")
    return 1 if any(row["num_failed"] for row in summary["results"]) else 0
