"""``ovss reproduce``: re-measure the published mIoU of each method's released settings.

``TARGETS`` lists, per method, every (setting, benchmark) number the papers or the released
logs give (upstream_spec.md §1f, §2f, §3f), with the registry dataset, the released weights or
config, and the mIoU definition the original evaluation used. ``run_reproduction`` evaluates
each target whose dataset is prepared with ``ovss eval``'s runner into
``OUT/<dataset>/<method>@<model>/`` (resumable, the same files as ``ovss eval``), then computes
the measured mIoU from the summed confusion matrices under the target's definition.

With ``workers`` (or ``address``) each target is evaluated as an ``ovss sweep`` instead, sharded
over Ray tasks into the same folder (``sweep.SweepModel`` names it ``<method>@<model>`` too), so a
sweep and a sequential run resume each other's images.

Nothing is invented: a target whose dataset is not prepared, whose weights cannot be had, or
whose benchmark has no registry dataset is not run, and its row says why. The rows go to
``OUT/<method>.json``; with ``docs``, a full run (no ``limit``) also rewrites that method's table
in ``docs/reproduce.md``, between ``<!-- reproduce:<method>:start -->`` and ``...:end -->``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ovss.datasets import get_dataset
from ovss.errors import OvssError
from ovss.evaluator import sum_confusions
from ovss.metrics import DEFINITIONS, compute_metrics
from ovss.runner import EvalSettings, plan_eval, run_eval
from ovss.sweep import SweepModel, SweepSettings, import_ray, init_ray, run_sweep
from ovss.worker import ModelSettings, WorkerFailure, model_settings
from ovss_common.outputs import write_json

#: The methods ``TARGETS`` covers.
METHODS = ("san", "ovseg", "car")


@dataclass(frozen=True)
class Target:
    """One published number and how to re-measure it.

    Attributes:
        method: ``san``, ``ovseg`` or ``car``.
        setting: the paper's name for the model (``"SAN ViT-B/16"``).
        model: the released weights' zoo name (SAN, OVSeg) or the shipped config (CaR).
        benchmark: the paper's column (``"A-847"``).
        dataset: the registry dataset, or None when the registry has none for the benchmark.
        published: the number to reproduce (mIoU, percent).
        source: where ``published`` comes from.
        definition: the mIoU definition of the original evaluation (``docs/metrics.md``).
        drop_unassigned: CaR's ``ignore_background`` on a dataset whose background is
            ignored in the ground truth: unassigned pixels are not misses.
        paper: the paper's figure where the target is another source's (SAN's logs).
    """

    method: str
    setting: str
    model: str
    benchmark: str
    dataset: str | None
    published: float
    source: str
    definition: str
    drop_unassigned: bool = False
    paper: float | None = None

    @property
    def folder_name(self) -> str:
        """``<method>@<model>``: the run's folder under ``OUT/<dataset>/``."""
        return f"{self.method}@{self.model}"


_SAN_BENCHMARKS = (
    ("A-847", "ade20k-847"),
    ("PC-459", "pc-459"),
    ("A-150", "ade20k-150"),
    ("PC-59", "pc-59"),
    ("VOC-20", "voc-20"),
    ("COCO-171", "coco-stuff-171"),
)
# Released logs (final copypaste lines) and the paper's table; the paper has no COCO-171 figure.
_SAN_NUMBERS = {
    "san_vit_b_16": (
        "SAN ViT-B/16",
        (10.21, 16.71, 27.56, 54.07, 93.95, 41.93),
        (10.1, 12.6, 27.5, 53.8, 94.0, None),
    ),
    "san_vit_large_14": (
        "SAN ViT-L/14",
        (12.96, 20.83, 31.93, 57.53, 95.18, 45.57),
        (12.4, 15.7, 32.1, 57.7, 94.6, None),
    ),
}
_OVSEG_BENCHMARKS = (
    ("A-847", "ade20k-847"),
    ("PC-459", "pc-459"),
    ("A-150", "ade20k-150"),
    ("PC-59", "pc-59"),
    ("PAS-20", "voc-20"),
)
_OVSEG_NUMBERS = {
    "ovseg_R101c_vitB16_ft_mpt": ("OVSeg R101c + ViT-B/16", (7.1, 11.0, 24.8, 53.3, 92.6)),
    "ovseg_swinbase_vitL14_ft_mpt": ("OVSeg Swin-B + ViT-L/14", (9.0, 12.4, 29.6, 55.7, 94.5)),
}
# (benchmark, dataset, config, drop_unassigned, published, source)
_CAR_ROWS = (
    ("VOC-21", "voc-21", "voc", False, 67.6, "paper abstract"),
    ("COCO-Object", None, "coco", False, 36.6, "paper abstract"),
    ("PC-60", None, "pascal_context", False, 30.5, "paper abstract"),
    ("PC-59", "pc-59", "pascal_context", True, 39.5, "results aggregator"),
    ("A-150", "ade20k-150", "ade_150", True, 17.7, "results aggregator"),
    ("A-847", "ade20k-847", "ade_847", True, 5.4, "results aggregator"),
    ("VOC-20", "voc-20", "voc", True, 91.4, "results aggregator"),
)

TARGETS: tuple[Target, ...] = (
    *(
        Target(
            method="san",
            setting=setting,
            model=model,
            benchmark=benchmark,
            dataset=dataset,
            published=log,
            source=f"released log ({model}.log)",
            definition="d2-main",
            paper=paper,
        )
        for model, (setting, logs, papers) in _SAN_NUMBERS.items()
        for (benchmark, dataset), log, paper in zip(_SAN_BENCHMARKS, logs, papers, strict=True)
    ),
    *(
        Target(
            method="ovseg",
            setting=setting,
            model=model,
            benchmark=benchmark,
            dataset=dataset,
            published=number,
            source="README table",
            definition="d2-v0.6",
        )
        for model, (setting, numbers) in _OVSEG_NUMBERS.items()
        for (benchmark, dataset), number in zip(_OVSEG_BENCHMARKS, numbers, strict=True)
    ),
    *(
        Target(
            method="car",
            setting="CaR ViT-B/16 CAM + ViT-L/14",
            model=config,
            benchmark=benchmark,
            dataset=dataset,
            published=published,
            source=source,
            definition="car",
            drop_unassigned=drop,
        )
        for benchmark, dataset, config, drop, published, source in _CAR_ROWS
    ),
)


def targets_of(method: str) -> list[Target]:
    """The targets of ``method``; one-line error for a method without any."""
    if method not in METHODS:
        raise OvssError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    return [target for target in TARGETS if target.method == method]


def official_model(target: Target, **load: Any) -> ModelSettings:
    """The released model of ``target``: SAN and OVSeg by zoo name, CaR by shipped config.

    ``load`` holds the other ``LoadRequest`` fields (device, dtype, threads) and ``timeout``.
    """
    if target.method == "car":
        return model_settings("car", config=target.model, **load)
    return model_settings(target.method, options={"model": target.model}, **load)


@dataclass
class Row:
    """A target and what became of it here (``status`` is one short line, ``detail`` the
    full message when it was shortened)."""

    target: Target
    status: str
    detail: str | None = None
    measured: float | None = None
    by_definition: dict[str, float | None] | None = None
    images: int = 0
    dataset_images: int | None = None
    folder: str | None = None
    provenance: dict[str, Any] | None = None


@dataclass(frozen=True)
class Scale:
    """Run each target as a sweep: ``workers`` CPU slots of an embedded Ray, or the cluster at
    ``address``; ``shards`` per target (default: ``workers``)."""

    workers: int = 2
    address: str | None = None
    shards: int | None = None


class _LoadFailed(OvssError):
    """A model that could not be loaded (the worker's one line)."""


def _evaluate(target: Target, settings: EvalSettings, scale: Scale | None) -> dict[str, Any]:
    """Run (or resume) one target's evaluation, in one worker or as a sweep; its metrics."""
    if scale is None:
        try:
            return run_eval(settings)
        except WorkerFailure as error:
            if error.request_type == "load":
                raise _LoadFailed(str(error)) from None
            raise
    summary = run_sweep(
        SweepSettings(
            models=[SweepModel(settings.model, target.model)],
            datasets=[target.dataset],
            out=settings.out.parent.parent,
            workers=scale.workers,
            shards=scale.shards,
            address=scale.address,
            definition=settings.definition,
            limit=settings.limit,
        )
    )
    (result,) = summary["results"]
    errors = [task["error"] for task in summary["tasks"] if task.get("error")]
    if errors and result["num_images"] == 0:
        raise _LoadFailed(errors[0])
    return json.loads(Path(result["metrics"]).read_text(encoding="utf-8"))


def _measure(target: Target, settings: EvalSettings, scale: Scale | None) -> Row:
    """Evaluate one target and score it under its definition."""
    metrics = _evaluate(target, settings, scale)
    plan = plan_eval(settings)
    stems = [sample.stem for sample in plan.samples]
    matrix = sum_confusions(settings.out, stems, plan.space.num_classes).counts
    by_definition = {
        definition: compute_metrics(
            matrix,
            definition,
            plan.space.class_names,
            drop_unassigned=target.drop_unassigned and definition == "car",
        )["mIoU"]
        for definition in DEFINITIONS
    }
    finished = metrics["num_images"]
    total = len(get_dataset(settings.dataset).samples())
    complete = finished == total
    if complete:
        status = "measured"
    elif metrics["num_failed"]:
        status = f"partial: {metrics['num_failed']} images failed (see failures.jsonl)"
    else:
        status = f"partial: first {finished} of {total} images"
    return Row(
        target=target,
        status=status,
        measured=by_definition[target.definition],
        by_definition=by_definition,
        images=finished,
        dataset_images=total,
        folder=str(settings.out),
        provenance=metrics.get("provenance"),
    )


def run_reproduction(
    targets: list[Target],
    model_for: Callable[[Target], ModelSettings],
    out: Path,
    limit: int | None = None,
    scale: Scale | None = None,
) -> list[Row]:
    """Evaluate every target whose dataset is prepared; one row per target, in order.

    A model whose load fails (weights missing offline, a bad download) is not tried again
    for its other datasets: their rows carry the same reason. With ``scale``, the targets run
    as sweeps on one Ray, started here unless this process has joined one already.
    """
    if scale is None:
        return _run_targets(targets, model_for, out, limit, None)
    ray = import_ray()
    own_ray = not ray.is_initialized()
    if own_ray:
        dashboard = init_ray(scale.workers, scale.address, dashboard=True)
        if dashboard:
            print(f"ovss: Ray dashboard at {dashboard}", file=sys.stderr)
    try:
        return _run_targets(targets, model_for, out, limit, scale)
    finally:
        if own_ray:
            ray.shutdown()


def _run_targets(
    targets: list[Target],
    model_for: Callable[[Target], ModelSettings],
    out: Path,
    limit: int | None,
    scale: Scale | None,
) -> list[Row]:
    rows: list[Row] = []
    unloadable: dict[str, str] = {}
    for target in targets:
        if target.dataset is None:
            rows.append(Row(target, f"not run: the registry has no {target.benchmark} dataset"))
            continue
        try:
            get_dataset(target.dataset).samples(limit)
        except OvssError as error:
            what, _, how = str(error).partition("; ")
            rows.append(Row(target, f"not run: {what}", detail=how or None))
            continue
        model = model_for(target)
        model_key = json.dumps(model.load_request(), sort_keys=True)
        if model_key in unloadable:
            rows.append(Row(target, unloadable[model_key]))
            continue
        settings = EvalSettings(
            model=model,
            dataset=target.dataset,
            out=out / target.dataset / target.folder_name,
            limit=limit,
            definition=target.definition,
        )
        print(f"ovss: reproduce {target.setting} on {target.dataset}", file=sys.stderr)
        try:
            rows.append(_measure(target, settings, scale))
        except _LoadFailed as error:
            unloadable[model_key] = f"not run: {error}"
            rows.append(Row(target, unloadable[model_key]))
        except OvssError as error:
            rows.append(Row(target, f"failed: {error}"))
    return rows


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def format_table(rows: list[Row]) -> str:
    """The markdown table of ``rows`` (published vs measured, with each row's status)."""
    lines = [
        "| setting | benchmark | dataset | mIoU definition | published | source | "
        "measured here | status |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    for row in rows:
        target = row.target
        definition = target.definition + (", unassigned ignored" if target.drop_unassigned else "")
        published = f"{target.published:g}"
        if target.paper is not None:
            published += f" (paper {target.paper:g})"
        status = row.status.replace("|", "\\|")
        lines.append(
            f"| {target.setting} | {target.benchmark} | {target.dataset or '–'} | {definition} | "
            f"{published} | {target.source} | {_number(row.measured)} | {status} |"
        )
    return "\n".join(lines) + "\n"


def _stamp(rows: list[Row]) -> str:
    """The line under a table: when and on what it was filled."""
    runs = [row.provenance for row in rows if row.provenance]
    when = datetime.date.today().isoformat()
    if not runs:
        return f"Filled on {when}: no target could be run here (see each row's status).\n"
    first = runs[0]
    return (
        f"Filled on {when} by `nox -s reproduce`: device {first.get('device')}, "
        f"{first.get('dtype')}, commit {first.get('git_commit')}.\n"
    )


def update_docs(path: Path, method: str, rows: list[Row]) -> None:
    """Replace ``method``'s table in the reproduction doc at ``path`` with ``rows``."""
    if not path.is_file():
        raise OvssError(f"{path}: no such file (the reproduction doc)")
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- reproduce:{method}:start -->", f"<!-- reproduce:{method}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise OvssError(f"{path}: no '{start}' ... '{end}' block for {method}")
    block = f"{start}\n{format_table(rows)}\n{_stamp(rows)}{end}"
    path.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def write_rows(path: Path, method: str, rows: list[Row], limit: int | None) -> None:
    """``OUT/<method>.json``: every row with its target, status and figures."""
    write_json(
        path,
        {
            "method": method,
            "limit": limit,
            "rows": [{**asdict(row), "target": asdict(row.target)} for row in rows],
        },
    )


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``reproduce`` sub-command."""
    parser = commands.add_parser(
        "reproduce", help="re-measure a method's published mIoU on the prepared datasets"
    )
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--datasets", nargs="+", help="only these registry datasets")
    parser.add_argument("--limit", type=int, help="first N images (never written to the docs)")
    parser.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, help="CPU threads of the worker")
    parser.add_argument("--timeout", type=float, help="seconds to wait for any one reply")
    parser.add_argument("--workers", type=int, help="run each target as a sweep on N Ray slots")
    parser.add_argument("--address", help="run each target as a sweep on this Ray cluster")
    parser.add_argument("--shards", type=int, help="shards per target (default: --workers)")
    parser.add_argument("--out", type=Path, default=Path("results") / "reproduce")
    parser.add_argument("--docs", type=Path, help="rewrite this method's table in this file")


def command(args: argparse.Namespace) -> int:
    """Run ``ovss reproduce``: print the table; exit 1 when a run that started failed."""
    targets = targets_of(args.method)
    if args.datasets:
        known = {target.dataset for target in targets}
        unknown = [name for name in args.datasets if name not in known]
        if unknown:
            raise OvssError(
                f"--datasets {unknown[0]}: {args.method} has no published number on it "
                f"(choose from {', '.join(sorted(d for d in known if d))})"
            )
        targets = [target for target in targets if target.dataset in args.datasets]
    if args.limit is not None and args.limit < 1:
        raise OvssError(f"--limit must be positive, got {args.limit}")
    scale = None
    if args.workers is not None or args.address is not None or args.shards is not None:
        scale = Scale(workers=args.workers or 2, address=args.address, shards=args.shards)
    rows = run_reproduction(
        targets,
        lambda target: official_model(
            target,
            device=args.device,
            dtype=args.dtype,
            threads=args.threads,
            timeout=args.timeout,
        ),
        args.out,
        args.limit,
        scale,
    )
    print(format_table(rows), end="")
    for detail in dict.fromkeys(row.detail for row in rows if row.detail):
        print(f"to prepare: {detail}")
    write_rows(args.out / f"{args.method}.json", args.method, rows, args.limit)
    print(f"reproduce -> {args.out / f'{args.method}.json'}")
    if args.docs is not None:
        if args.limit is not None or args.datasets:
            print(f"{args.docs} left as is: only a full run of every target fills it")
        else:
            update_docs(args.docs, args.method, rows)
            print(f"reproduce -> {args.docs}")
    return 1 if any(row.status.startswith("failed") for row in rows) else 0
