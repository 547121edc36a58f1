"""``ovss reproduce``: re-measure the published mIoU of each method's released settings.

Each method package lists its published numbers in the file its ``[tool.ovss.method]`` table
names as ``targets`` (one ``[[target]]`` per setting and benchmark: the registry dataset, the
released model, the published figure and its source, and the mIoU definition the original
evaluation used). ``run_reproduction`` evaluates each target whose dataset is prepared with the
evaluation engine into ``OUT/<dataset>/<method>@<model>/`` (resumable, the same files as
``ovss eval``), then scores the summed confusion matrix under the target's definition.

With ``workers`` (or ``address``) each target is evaluated as an ``ovss sweep`` instead, sharded
over Ray tasks into the same folder (``SweepModel`` names it ``<method>@<model>`` too), so a
sweep and a sequential run resume each other's images.

Nothing is invented: a target whose dataset is not prepared, whose weights cannot be had, or
whose benchmark has no registry dataset is not run, and its row says why. The rows go to
``OUT/<method>.json``; with ``docs``, a full run (no ``limit``) also rewrites that method's table
in the reproduction doc, in its ``reproduce:<method>`` block (appended when the doc has none).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ovss.checkpoints import SweepModel
from ovss.datasets import get_dataset
from ovss.engine import EvalSettings, Outcome
from ovss.environments import discover_methods, get_method
from ovss.errors import OvssError
from ovss.markdown import markers, read_block, replace_block
from ovss.metrics import DEFINITIONS, compute_metrics
from ovss.ray_cluster import check_device, import_ray, start_ray
from ovss.runner import run_evaluation
from ovss.sweep import SweepSettings, execute_sweep
from ovss.worker import ModelSettings, WorkerFailure, model_settings
from ovss_common.outputs import write_json


@dataclass(frozen=True)
class Target:
    """One published number and how to re-measure it.

    Attributes:
        method: the method package's name.
        setting: the paper's name for the model (``"SAN ViT-B/16"``).
        model: the released model's name, sent as the ``model`` load option.
        benchmark: the paper's column (``"A-847"``).
        dataset: the registry dataset, or None when the registry has none for the benchmark.
        published: the number to reproduce (mIoU, percent).
        source: where ``published`` comes from.
        definition: the mIoU definition of the original evaluation (``docs/metrics.md``).
        drop_unassigned: unassigned pixels are not misses (a background the original ignores
            on a dataset whose background is ignored in the ground truth).
        paper: the paper's figure where the target is another source's.
        decimals: the decimals ``source`` gives ``published`` with.
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
    decimals: int = 1

    @property
    def folder_name(self) -> str:
        """``<method>@<model>``: the run's folder under ``OUT/<dataset>/``."""
        return f"{self.method}@{self.model}"


def read_targets(method: str, path: Path) -> list[Target]:
    """The ``[[target]]`` tables of a method's targets file; one-line error for a bad one."""
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("target", [])
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise OvssError(f"{path}: unreadable targets file ({error})") from None
    known = {f.name for f in fields(Target)} - {"method"}
    targets = []
    for index, table in enumerate(tables, start=1):
        unknown = sorted(set(table) - known)
        if unknown:
            raise OvssError(f"{path}: target {index} has an unknown key {unknown[0]!r}")
        try:
            target = Target(method=method, **{"dataset": None, **table})
        except TypeError as error:
            raise OvssError(f"{path}: target {index}: {error}") from None
        if target.definition not in DEFINITIONS:
            raise OvssError(f"{path}: target {index}: unknown definition {target.definition!r}")
        targets.append(target)
    return targets


def methods_with_targets() -> list[str]:
    """The discovered methods whose package declares published targets."""
    return sorted(name for name, p in discover_methods().items() if p.targets_file)


def targets_of(method: str) -> list[Target]:
    """The targets ``method``'s package declares; one-line error for a method without any."""
    package = get_method(method)
    if not package.targets_file:
        have = ", ".join(methods_with_targets()) or "none"
        raise OvssError(f"--method {method!r} declares no published targets (have: {have})")
    return read_targets(method, package.project / package.targets_file)


def official_model(target: Target, **load: Any) -> ModelSettings:
    """The released model of ``target``, named by the ``model`` load option: a zoo name for SAN
    and OVSeg, a shipped config for CaR (``ovss sweep --checkpoints`` sends the same request).

    ``load`` holds the other ``LoadRequest`` fields (device, dtype, threads) and ``timeout``.
    """
    return model_settings(target.method, options={"model": target.model}, **load)


@dataclass
class Row:
    """A target and what became of it here.

    ``status`` is one short line, ``detail`` the full message where it was shortened.
    ``problem`` marks a target that was tried and did not give a complete measurement (its
    model did not load, images failed, the run failed): ``ovss reproduce`` then exits 1.
    """

    target: Target
    status: str
    detail: str | None = None
    problem: bool = False
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


def _evaluate(target: Target, settings: EvalSettings, out: Path, scale: Scale | None) -> Outcome:
    """Run (or resume) one target's evaluation, in one worker or as a sweep into ``out``."""
    if scale is None:
        try:
            return run_evaluation(settings)
        except WorkerFailure as error:
            if error.request_type == "load":
                raise _LoadFailed(str(error)) from None
            raise
    swept = execute_sweep(
        SweepSettings(
            models=[SweepModel(settings.model, target.model)],
            datasets=[settings.dataset],
            out=out,
            workers=scale.workers,
            shards=scale.shards,
            address=scale.address,
            definition=settings.definition,
            limit=settings.limit,
        )
    )
    load_errors = [task["error"] for task in swept.summary["tasks"] if task.get("load_failed")]
    if load_errors:
        raise _LoadFailed(load_errors[0])
    (outcome,) = swept.outcomes
    return outcome


def _measure(target: Target, settings: EvalSettings, out: Path, scale: Scale | None) -> Row:
    """Evaluate one target and score its summed confusion under every definition."""
    outcome = _evaluate(target, settings, out, scale)
    metrics = outcome.metrics
    by_definition = {
        definition: compute_metrics(
            outcome.confusion,
            definition,
            outcome.space.class_names,
            drop_unassigned=target.drop_unassigned and definition == "car",
        )["mIoU"]
        for definition in DEFINITIONS
    }
    finished, failed = metrics["num_images"], metrics["num_failed"]
    attempted = finished + failed
    total = len(get_dataset(settings.dataset).stems())
    if failed:
        status = f"partial: {failed} of {attempted} images failed (see failures.jsonl)"
    elif finished < total:
        status = f"partial: first {finished} of {total} images"
    else:
        status = "measured"
    return Row(
        target=target,
        status=status,
        problem=bool(failed),
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
    restart: bool = False,
) -> list[Row]:
    """Evaluate every target whose dataset is prepared; one row per target, in order.

    A model whose load fails (weights missing offline, a bad download) is not tried again
    for its other datasets: their rows carry the same reason. With ``scale``, the targets run
    as sweeps on one Ray, started here unless this process has joined one already. With
    ``restart``, each target's earlier results are discarded first.
    """
    if scale is None:
        return _run_targets(targets, model_for, out, limit, None, restart)
    own_ray, _ = start_ray(scale.workers, scale.address, dashboard=True)
    try:
        return _run_targets(targets, model_for, out, limit, scale, restart)
    finally:
        if own_ray:
            import_ray().shutdown()


def _run_targets(
    targets: list[Target],
    model_for: Callable[[Target], ModelSettings],
    out: Path,
    limit: int | None,
    scale: Scale | None,
    restart: bool,
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
            rows.append(Row(target, unloadable[model_key], problem=True))
            continue
        settings = EvalSettings(
            model=model,
            dataset=target.dataset,
            out=out / target.dataset / target.folder_name,
            limit=limit,
            definition=target.definition,
        )
        if restart:
            shutil.rmtree(settings.out, ignore_errors=True)
        print(f"ovss: reproduce {target.setting} on {target.dataset}", file=sys.stderr)
        try:
            rows.append(_measure(target, settings, out, scale))
        except _LoadFailed as error:
            unloadable[model_key] = f"not run: {error}"
            rows.append(Row(target, unloadable[model_key], problem=True))
        except OvssError as error:
            rows.append(Row(target, f"failed: {error}", problem=True))
    return rows


def _number(value: float | None, decimals: int = 2) -> str:
    return "–" if value is None else f"{value:.{decimals}f}"


HEADER = (
    "| setting | benchmark | dataset | mIoU definition | published | source | "
    "measured here | status |\n"
    "|---|---|---|---|---:|---|---:|---|\n"
)


def table_line(row: Row) -> str:
    """``row`` as one markdown table line (the published figure as precise as its source)."""
    target = row.target
    definition = target.definition + (", unassigned ignored" if target.drop_unassigned else "")
    published = _number(target.published, target.decimals)
    if target.paper is not None:
        published += f" (paper {_number(target.paper, 1)})"
    status = " ".join(row.status.split()).replace("|", "\\|")
    return (
        f"| {target.setting} | {target.benchmark} | {target.dataset or '–'} | {definition} | "
        f"{published} | {target.source} | {_number(row.measured)} | {status} |"
    )


def format_table(rows: list[Row]) -> str:
    """The markdown table of ``rows`` (published vs measured, with each row's status)."""
    return HEADER + "".join(table_line(row) + "\n" for row in rows)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _stamp(rows: list[Row], kept: int) -> str:
    """The line under a table: when and on what it was filled."""
    runs = [row.provenance for row in rows if row.provenance]
    when = datetime.date.today().isoformat()
    if runs:
        first = runs[0]
        stamp = (
            f"Filled on {when} by `ovss reproduce`: device {first.get('device')}, "
            f"{first.get('dtype')}, commit {first.get('git_commit')}."
        )
    else:
        stamp = f"Filled on {when}: no target could be run here (see each row's status)."
    if kept:
        stamp += f" Rows kept from an earlier run (their targets could not run now): {kept}."
    return stamp + "\n"


def update_docs(path: Path, method: str, rows: list[Row]) -> None:
    """Replace ``method``'s table (its ``reproduce:<method>`` block) in the reproduction doc at
    ``path`` with ``rows``; a doc without the block gets it appended under a new heading.

    A target that was not measured now keeps its line from the table being replaced when that
    line has a measured figure: a run on a machine without some dataset or weights never
    erases what another machine measured.
    """
    if not path.is_file():
        raise OvssError(f"{path}: no such file (the reproduction doc)")
    name = f"reproduce:{method}"
    start, end = markers(name)
    text = path.read_text(encoding="utf-8")
    if start not in text and end not in text:
        path.write_text(f"{text.rstrip()}\n\n## {method}\n\n{start}\n{end}\n", encoding="utf-8")
    earlier = {
        tuple(cells[:2]): line
        for line in read_block(path, name).splitlines()
        if len(cells := _cells(line)) == 8 and cells[6] not in ("–", "measured here")
    }
    lines, kept = [], 0
    for row in rows:
        line = earlier.get((row.target.setting, row.target.benchmark))
        if row.measured is None and line is not None:
            lines.append(line)
            kept += 1
        else:
            lines.append(table_line(row))
    table = HEADER + "".join(line + "\n" for line in lines)
    replace_block(path, name, f"{table}\n{_stamp(rows, kept)}".removesuffix("\n"))


def write_rows(path: Path, method: str, rows: list[Row], limit: int | None) -> None:
    """``OUT/<method>.json``: every row with its target, status and figures."""
    write_json(path, {"method": method, "limit": limit, "rows": [asdict(row) for row in rows]})


def exit_status(rows: list[Row]) -> int:
    """1 when some target was tried and did not give a complete measurement, else 0."""
    return 1 if any(row.problem for row in rows) else 0


HELP = "re-measure a method's published mIoU on the prepared datasets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``ovss reproduce``."""
    parser.add_argument("--method", required=True, help="a method with published targets")
    parser.add_argument("--datasets", nargs="+", help="only these registry datasets")
    parser.add_argument("--limit", type=int, help="first N images (never written to the docs)")
    parser.add_argument("--device", help="cpu, cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, help="CPU threads of the worker")
    parser.add_argument("--timeout", type=float, help="seconds to wait for any one reply")
    parser.add_argument("--workers", type=int, help="run each target as a sweep on N Ray slots")
    parser.add_argument("--address", help="run each target as a sweep on this Ray cluster")
    parser.add_argument("--shards", type=int, help="shards per target (default: --workers)")
    parser.add_argument("--restart", action="store_true", help="discard earlier results first")
    parser.add_argument("--out", type=Path, default=Path("results") / "reproduce")
    parser.add_argument("--docs", type=Path, help="rewrite this method's table in this file")


def _check_args(args: argparse.Namespace) -> Scale | None:
    """One-line errors for bad numbers; the sweep settings when a Ray flag is given."""
    for flag in ("limit", "workers", "shards", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise OvssError(f"--{flag} must be positive, got {value}")
    if args.workers is None and args.address is None and args.shards is None:
        return None
    check_device(args.device)
    return Scale(workers=args.workers or 2, address=args.address, shards=args.shards)


def command(args: argparse.Namespace) -> int:
    """Run ``ovss reproduce``: print the table; exit 1 when a target that was tried did not give
    a complete measurement (see ``Row.problem``)."""
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
    scale = _check_args(args)
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
        args.restart,
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
    return exit_status(rows)
