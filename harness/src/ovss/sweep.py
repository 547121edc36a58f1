"""``ovss sweep``: evaluate models x datasets as Ray tasks, one per (model, dataset, shard).

A model is a method with its default checkpoint, or one of the checkpoints ``--checkpoints``
names for it. Each task runs in the harness environment (the only one with Ray) and starts its
method's worker subprocess in the method's own environment through ``ovss.worker.Worker``, exactly
as ``ovss eval`` does. A task predicts its shard of the dataset's sorted samples into the model's
shared folder, ``OUT/<dataset>/<method>/`` (``<method>@<checkpoint>`` for a ``--checkpoints``
entry), which has ``ovss eval``'s layout: every finished image has ``predictions/<stem>.png`` and,
written last, ``confusion/<stem>.npz``. Images with a confusion file are never predicted again, so
a killed task (or a killed sweep) re-runs only its unfinished images, and re-running a finished
sweep predicts nothing.

When every task of a (model, dataset) has ended, the driver sums the stored confusion matrices
(never averaging shard figures) into ``metrics.json`` and ``sem_seg_predictions.json``: the same
numbers as a single-process ``ovss eval``. ``OUT/sweep.json`` and ``OUT/table.md`` hold the table.

Ray is embedded (a local instance on 127.0.0.1 with ``--workers`` CPU slots and Ray's dashboard on
127.0.0.1) unless ``--address`` names a running cluster. Tasks take one GPU each where the cluster
has GPUs, one CPU slot otherwise. Each task draws a progress bar in the driver's terminal (one
line per image where stderr is not a terminal).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovss.datasets import datasets_root
from ovss.environments import get_method
from ovss.errors import OvssError
from ovss.evaluator import SemSegEvaluator, confusion_file, load_confusion
from ovss.metrics import DEFAULT_DEFINITION, DEFINITIONS
from ovss.rle import export_predictions
from ovss.runner import EvalSettings, _Run, cache_key, plan_eval
from ovss.vocabulary import clean_vocabulary
from ovss.worker import ModelSettings, Worker, WorkerDied, WorkerFailure, model_settings
from ovss_common.outputs import LabelMapError, write_json

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
#: Never phone home, from the driver or from any task.
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
#: Cache-key fields that are known without starting a worker (checked before any task runs).
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
#: How ``--checkpoints`` tells a released model's name from a path: a path has a "/" or a ".".
MODEL_NAME = re.compile(r"[A-Za-z0-9_+-]+")


def shard_stems(stems: list[str], shards: int) -> list[list[str]]:
    """Split the sorted ``stems`` into at most ``shards`` contiguous parts of ceil(n / shards).

    No stem is dropped; trailing empty parts are left out.
    """
    if shards < 1:
        raise OvssError(f"--shards must be positive, got {shards}")
    ordered = sorted(stems)
    size = max(1, math.ceil(len(ordered) / shards))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


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


def task_resources(cluster: dict[str, float], device: str | None = None) -> dict[str, float]:
    """The Ray resources of one task on a cluster with ``cluster``'s resources.

    One GPU where the cluster has one and ``device`` is not ``cpu`` (Ray then sets the task's
    ``CUDA_VISIBLE_DEVICES``, which its worker subprocess inherits, so ``cuda`` is that GPU); no
    CPU slot then, so that ``--workers`` does not cap the GPUs in use. One CPU slot otherwise.
    """
    if cluster.get("GPU", 0) >= 1 and device != "cpu":
        return {"num_gpus": 1, "num_cpus": 0}
    return {"num_cpus": 1}


@dataclass
class SweepSettings:
    """A sweep: models x datasets, sharded, on an embedded or existing Ray cluster.

    ``dashboard`` starts Ray's dashboard with an embedded Ray; ``progress_bars`` draws a bar per
    task (None: where stderr is a terminal), else each task prints one line per image.
    ``kill_after`` is fault injection for tests: a task's process exits (as if killed) after
    predicting that many images while images of its shard are still unfinished.
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
    kill_after: int | None = None

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
    kill_after: int | None = None


def _check_run_file(out: Path, key: dict[str, Any], fields: tuple[str, ...] | None = None) -> None:
    """Refuse a folder whose ``run.json`` holds another run (only ``fields`` when given)."""
    run_file = out / "run.json"
    if not run_file.is_file():
        return
    stored = json.loads(run_file.read_text(encoding="utf-8")).get("cache_key", {})
    names = set(fields) if fields is not None else set(stored) | set(key)
    differing = sorted(k for k in names if stored.get(k) != key.get(k))
    if differing:
        raise OvssError(
            f"{out} holds results of another run (differs in {', '.join(differing)}); "
            "use another --out or delete that folder"
        )


def _progress_bar(label: str, total: int, done: int) -> Any:
    """A task's progress bar, drawn by the Ray driver (``tqdm_ray``), at ``done`` of ``total``."""
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(desc=label, total=total, unit="img")
    bar.n = done
    bar.refresh()
    return bar


def run_shard(task: ShardTask) -> dict[str, Any]:
    """Predict the unfinished images of one shard (the body of a Ray task).

    Starts no worker when every image of the shard is finished. Progress goes to a bar
    (``task.progress_bar``) or to one stderr line per image. A worker that cannot load its model
    (a checkpoint that cannot be resolved, ...) ends the task with the result's ``error`` and
    ``load_failed``.
    """
    os.environ.update({**task.env, **QUIET_ENV})
    settings = task.settings
    plan = plan_eval(settings)
    wanted = set(task.stems)
    out = settings.out
    pending = [s for s in plan.samples if s.stem in wanted]
    pending = [s for s in pending if not confusion_file(out, s.stem).is_file()]
    result: dict[str, Any] = {
        "label": task.label,
        "images": len(task.stems),
        "predicted": 0,
        "failed": [],
        "restarts": 0,
        "model_seconds": 0.0,
    }
    if not pending:
        return result
    out.mkdir(parents=True, exist_ok=True)
    log = out / "logs" / f"worker-{task.label.replace('/', '_')}.log"
    load = dataclasses.asdict(plan.load)
    done = len(task.stems) - len(pending)
    bar = _progress_bar(task.label, len(task.stems), done) if task.progress_bar else None
    try:
        with Worker(plan.package, load, log, settings.model.timeout) as worker:
            key = cache_key(settings, plan, worker.load_info)
            _check_run_file(out, key)
            run = _Run(settings, plan, worker)
            if not (out / "run.json").is_file():
                write_json(out / "run.json", {"cache_key": key, "provenance": run.provenance})
            for position, sample in enumerate(pending, start=1):
                if confusion_file(out, sample.stem).is_file():
                    if bar is not None:
                        bar.update(1)
                    continue
                try:
                    run.predict(sample)
                except (WorkerFailure, WorkerDied, OvssError, LabelMapError) as error:
                    result["failed"].append({"stem": sample.stem, "error": str(error)})
                    print(f"ovss: {task.label}: {sample.stem} failed: {error}", file=sys.stderr)
                    continue
                if bar is None:
                    print(f"ovss: {task.label}: {sample.stem} done", file=sys.stderr, flush=True)
                else:
                    bar.update(1)
                if task.kill_after and run.predicted >= task.kill_after and position < len(pending):
                    sys.stderr.flush()
                    os._exit(137)
            result.update(
                predicted=run.predicted, restarts=worker.restarts, model_seconds=run.model_seconds
            )
    except OvssError as error:
        unfinished = [s.stem for s in pending if not confusion_file(out, s.stem).is_file()]
        load_failed = isinstance(error, WorkerFailure) and error.request_type == "load"
        result.update(error=str(error), unfinished=unfinished, load_failed=load_failed)
    finally:
        if bar is not None:
            bar.close()
    return result


def import_ray() -> Any:
    """The ``ray`` module, imported with usage statistics off and one log line per image."""
    os.environ.update(QUIET_ENV)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # one progress line per image (read at import)
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a harness dependency
        raise OvssError("ovss sweep needs ray in the harness environment (uv sync)") from None
    return ray


def _http(url: str | None) -> str | None:
    """A dashboard address as Ray gives it (``127.0.0.1:8265``) as a link; None for none."""
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def init_ray(workers: int, address: str | None = None, dashboard: bool = False) -> str | None:
    """Join the cluster at ``address``, or start an embedded one on 127.0.0.1 with ``workers``
    CPUs and, with ``dashboard``, Ray's dashboard on 127.0.0.1 (where it can start: a failure
    leaves Ray running without it).

    Returns the link to the dashboard of the Ray joined or started; None when it has none, or
    when Ray was already initialised in this process (nothing is started then).
    """
    if not address:
        # Keep an embedded Ray on the loopback interface: Ray otherwise replaces 127.0.0.1
        # with the host's reachable address unless "clusters" are disabled (read at import).
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = import_ray()
    if ray.is_initialized():
        return None
    if address:
        return _http(ray.init(address=address, log_to_driver=True).dashboard_url)
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False  # ray was imported before the variable was set
    context = ray.init(
        num_cpus=workers,
        # None: start the dashboard where its dependencies are installed, and go on without
        # it where it fails to start (True would make ray.init fail instead).
        include_dashboard=None if dashboard else False,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
    )
    return _http(context.dashboard_url)


def start_ray(workers: int, address: str | None, dashboard: bool) -> tuple[bool, str | None]:
    """``init_ray`` unless this process has joined a Ray already; prints the dashboard's link,
    or why there is none.

    Returns whether Ray was started here (the caller shuts it down) and the dashboard's link.
    """
    if import_ray().is_initialized():
        return False, None
    link = init_ray(workers, address, dashboard)
    if link:
        print(f"ovss: Ray dashboard at {link}", file=sys.stderr)
    elif dashboard and not address:
        print(
            "ovss: the Ray dashboard did not start (are ray[default]'s dependencies "
            "installed?); going on without it",
            file=sys.stderr,
        )
    return True, link


def check_device(device: str | None) -> None:
    """Refuse ``cuda:N``: a Ray task sees only the GPU Ray gave it."""
    if device and device.startswith("cuda:"):
        raise OvssError(
            f"--device {device}: a task sees only the GPU Ray gave it; use --device cuda"
        )


def _eval_settings(model: SweepModel, dataset: str, settings: SweepSettings) -> EvalSettings:
    return EvalSettings(
        model=model.settings,
        dataset=dataset,
        out=(settings.out / dataset / model.folder).resolve(),
        limit=settings.limit,
        definition=settings.definition,
    )


def _finish(eval_settings: EvalSettings, results: list[dict[str, Any]], wall: float) -> dict:
    """Sum the stored confusions of one (method, dataset) into metrics.json; return them."""
    plan = plan_eval(eval_settings)
    out = eval_settings.out
    evaluator = SemSegEvaluator(
        plan.space.num_classes,
        plan.space.ignore_label,
        plan.space.class_names,
        eval_settings.definition,
    )
    finished = {}
    missing = []
    for sample in plan.samples:
        path = confusion_file(out, sample.stem)
        if path.is_file():
            evaluator.add(sample.stem, load_confusion(path))
            finished[str(sample.image)] = out / "predictions" / f"{sample.stem}.png"
        else:
            missing.append(sample.stem)
    failures = [f for r in results for f in r.get("failed", [])]
    errors = {f["stem"]: f["error"] for f in failures}
    for result in results:
        for stem in result.get("unfinished", []):
            errors.setdefault(stem, result["error"])
    (out / "failures.jsonl").unlink(missing_ok=True)
    if missing:
        out.mkdir(parents=True, exist_ok=True)
        with (out / "failures.jsonl").open("w", encoding="utf-8") as file:
            for stem in missing:
                entry = {"stem": stem, "error": errors.get(stem, "not predicted")}
                file.write(json.dumps(entry, ensure_ascii=False) + "\n")
    run_file = out / "run.json"
    provenance = (
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
            "failed": missing,
            "num_predicted_now": sum(r.get("predicted", 0) for r in results),
            "restarts": sum(r.get("restarts", 0) for r in results),
            "seconds": {
                "wall": wall,
                "model": sum(r.get("model_seconds", 0.0) for r in results),
            },
            "provenance": provenance,
        }
    )
    shutil.rmtree(out / ".work", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    export_predictions(finished, out / "sem_seg_predictions.json")
    return metrics


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


def run_sweep(settings: SweepSettings) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the summary also written to ``OUT/sweep.json``."""
    if settings.workers < 1:
        raise OvssError(f"--workers must be positive, got {settings.workers}")
    started = time.perf_counter()
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    env["DETECTRON2_DATASETS"] = str(datasets_root().resolve())
    bars = sys.stderr.isatty() if settings.progress_bars is None else settings.progress_bars
    jobs: list[tuple[SweepModel, EvalSettings, list[ShardTask]]] = []
    for dataset in settings.datasets:
        for model in settings.models:
            eval_settings = _eval_settings(model, dataset, settings)
            plan = plan_eval(eval_settings)  # checks method, dataset, files before Ray starts
            static = cache_key(eval_settings, plan, {})
            _check_run_file(eval_settings.out, static, STATIC_KEY_FIELDS)
            parts = shard_stems([s.stem for s in plan.samples], settings.num_shards)
            tasks = [
                ShardTask(
                    settings=eval_settings,
                    stems=stems,
                    label=f"{model.folder}/{dataset}/shard{index + 1}of{len(parts)}",
                    env=env,
                    progress_bar=bars,
                    kill_after=settings.kill_after,
                )
                for index, stems in enumerate(parts)
            ]
            jobs.append((model, eval_settings, tasks))
    ray = import_ray()
    own_ray, dashboard = start_ray(settings.workers, settings.address, settings.dashboard)
    try:
        devices = {model.settings.load.device for model in settings.models}
        options = task_resources(ray.cluster_resources(), "cpu" if devices == {"cpu"} else None)
        if "num_gpus" not in options and settings.address is None:
            threads = max(1, (os.cpu_count() or 1) // settings.workers)
            for _, eval_settings, _ in jobs:
                if eval_settings.model.load.threads is None:
                    eval_settings.model.load = dataclasses.replace(
                        eval_settings.model.load, threads=threads
                    )
        remote = ray.remote(run_shard).options(max_retries=settings.max_retries, **options)
        pending = {}
        for job_index, (_, _, tasks) in enumerate(jobs):
            for task in tasks:
                pending[remote.remote(task)] = (job_index, task)
        results: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(jobs))}
        total, ended = len(pending), 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job_index, task = pending.pop(ready[0])
            ended += 1
            try:
                result = ray.get(ready[0])
                outcome = result.get("error") or (
                    f"{result['predicted']} predicted, {len(result['failed'])} failed"
                )
            except Exception as error:  # a task that died beyond its retries or raised
                text = str(error).strip()
                outcome = text.splitlines()[-1] if text else repr(error)
                result = {"label": task.label, "error": outcome, "unfinished": task.stems}
            print(f"ovss: sweep [{ended}/{total}] {task.label}: {outcome}", file=sys.stderr)
            results[job_index].append(result)
    finally:
        if own_ray:
            ray.shutdown()
    rows = []
    wall = time.perf_counter() - started
    for job_index, (model, eval_settings, _) in enumerate(jobs):
        metrics = _finish(eval_settings, results[job_index], wall)
        rows.append(
            {
                "method": eval_settings.model.method,
                "checkpoint": model.checkpoint_name,
                "dataset": eval_settings.dataset,
                **{
                    k: metrics[k]
                    for k in ("label_space", "mIoU", "fwIoU", "mACC", "pACC", "definition")
                },
                "num_images": metrics["num_images"],
                "num_failed": metrics["num_failed"],
                "num_predicted_now": metrics["num_predicted_now"],
                "metrics": str(eval_settings.out / "metrics.json"),
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
        "tasks": [result for job in results.values() for result in job],
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(settings.out / "sweep.json", summary)
    (settings.out / "table.md").write_text(_format_table(rows), encoding="utf-8")
    return summary


def _names(values: list[str], what: str) -> list[str]:
    """``a,b c`` -> ``[a, b, c]`` (commas or spaces), stripped, no empties or repeats."""
    return clean_vocabulary([p for v in values for p in v.split(",") if p.strip()], what)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``sweep`` sub-command."""
    sweep = commands.add_parser("sweep", help="methods x datasets as sharded Ray tasks")
    sweep.add_argument("--methods", nargs="+", default=["san,ovseg,car"], help="e.g. san,car")
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
    sweep.add_argument("--timeout", type=float, help="seconds to wait for any one reply")
    sweep.add_argument("--out", type=Path, default=Path("results") / "sweep")


def command(args: argparse.Namespace) -> int:
    """Run ``ovss sweep``: print the table; exit 1 when some image is unfinished."""
    check_device(args.device)
    methods = _names(args.methods, "--methods")
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


def bench(
    method: str, dataset: str, out: Path, workers: tuple[int, ...] = (1, 2), tiny: bool = True
) -> dict[str, Any]:
    """Images per minute of a fresh sweep of ``method`` on ``dataset`` with each worker count.

    Each count gets its own embedded Ray (start time reported apart) and an empty folder, so
    every image is predicted; the result is written to ``out`` after each count.
    """
    import tempfile

    ray = import_ray()
    report: dict[str, Any] = {
        "method": method,
        "dataset": dataset,
        "tiny": tiny,
        "cpus": os.cpu_count(),
        "runs": [],
    }
    for count in workers:
        with tempfile.TemporaryDirectory(prefix="ovss-bench-sweep-") as folder:
            started = time.perf_counter()
            init_ray(count)
            ray_start = time.perf_counter() - started
            try:
                gpus = ray.cluster_resources().get("GPU", 0)
                settings = SweepSettings(
                    models=[SweepModel(model_settings(method, tiny=tiny))],
                    datasets=[dataset],
                    out=Path(folder),
                    workers=count,
                )
                started = time.perf_counter()
                summary = run_sweep(settings)
                seconds = time.perf_counter() - started
            finally:
                ray.shutdown()
        images = sum(row["num_images"] for row in summary["results"])
        report["runs"].append(
            {
                "workers": count,
                "gpus": gpus,
                "images": images,
                "seconds": seconds,
                "images_per_minute": images / seconds * 60,
                "ray_start_seconds": ray_start,
                "mIoU": summary["results"][0]["mIoU"],
            }
        )
        write_json(out, report)
        print(f"ovss: bench-sweep {count} workers: {images / seconds * 60:.1f} images/min")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="ovss sweep throughput (nox -s bench-sweep)")
    parser.add_argument("--method", default="san")
    parser.add_argument("--dataset", default="mini-voc")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("results") / "bench" / "sweep.json")
    arguments = parser.parse_args()
    bench(arguments.method, arguments.dataset, arguments.out, tuple(arguments.workers))
