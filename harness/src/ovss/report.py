"""The comparison report: ``report.md``, ``report.html``, ``metrics.csv`` and PNG charts.

``metrics.csv`` is long-format (one value per row): ``method, label_space, protocol,
definition, class, metric, value``, where ``class`` is empty for the summary metrics.
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ovss.compare import Comparison, MethodResult
from ovss.metrics import NO_CLASS
from ovss.render import Panel, overlay, side_by_side
from ovss_common.images import read_image
from ovss_common.outputs import read_label_map, write_atomic

SUMMARY = ("mIoU", "fwIoU", "mACC", "pACC")
DEFINITION_NOTES = {
    "d2-v0.6": "detectron2 0.6 (SAN, OVSeg): classes absent from GT but predicted count as 0",
    "d2-main": "detectron2 main: mean over classes present in the ground truth",
    "mmseg": "mmseg: mean over classes with any GT or prediction",
    "car": "CaR's semantic_iou: mean over GT-present classes; with a background id dropped",
}


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _megabytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def _class_names(comparison: Comparison) -> list[str]:
    """The classes some method has an IoU for (present in the images), in first-seen order."""
    seen: dict[str, None] = {}
    for result in comparison.results:
        seen.update(dict.fromkeys(result.metrics["per_class"]))
    return [name for name in seen if any(_iou(r, name) is not None for r in comparison.results)]


def _iou(result: MethodResult, name: str) -> float | None:
    return result.metrics["per_class"].get(name, {}).get("IoU")


def write_csv(comparison: Comparison, path: Path) -> Path:
    """The long-format ``metrics.csv``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "label_space", "protocol", "definition", "class", "metric", "value"])
    protocol = "harmonised" if comparison.settings.harmonised else "native"
    for result in comparison.results:
        head = [result.method, result.space.name, protocol]
        definition = comparison.settings.definition
        for metric in SUMMARY:
            writer.writerow([*head, definition, "", metric, _number(result.metrics[metric], 4)])
        for other, value in result.by_definition.items():
            if other != definition:
                writer.writerow([*head, other, "", "mIoU", _number(value, 4)])
        for name, values in result.metrics["per_class"].items():
            writer.writerow([*head, definition, name, "IoU", _number(values["IoU"], 4)])
        writer.writerow(
            [*head, "", "", "median_seconds_per_image", _number(result.median_seconds, 4)]
        )
        writer.writerow([*head, "", "", "peak_rss_mb", _megabytes(result.peak_rss_bytes)])
        if result.peak_device_bytes is not None:
            writer.writerow([*head, "", "", "peak_device_mb", _megabytes(result.peak_device_bytes)])
    return write_atomic(path, lambda file: file.write(buffer.getvalue().encode("utf-8")))


def _save_figure(figure: Figure, path: Path) -> Path:
    return write_atomic(
        path, lambda file: figure.savefig(file, format="png", dpi=100, bbox_inches="tight")
    )


def write_charts(comparison: Comparison, folder: Path) -> dict[str, Path]:
    """Bar charts: mIoU (chosen definition), per-class IoU, seconds per image, peak memory."""
    methods = [r.method.upper() for r in comparison.results]
    charts: dict[str, Path] = {}
    summary = [
        (
            "miou",
            f"mIoU ({comparison.settings.definition}), %",
            [r.metrics["mIoU"] for r in comparison.results],
        ),
        (
            "seconds",
            "median model seconds per image",
            [r.median_seconds for r in comparison.results],
        ),
        (
            "memory",
            "peak worker RSS, MiB",
            [
                None if r.peak_rss_bytes is None else r.peak_rss_bytes / 2**20
                for r in comparison.results
            ],
        ),
    ]
    for key, title, values in summary:
        figure = Figure(figsize=(4, 3))
        axes = figure.subplots()
        axes.bar(
            methods,
            [0.0 if v is None else v for v in values],
            color=["C0", "C1", "C2"][: len(methods)],
        )
        axes.set_title(title)
        charts[key] = _save_figure(figure, folder / f"{key}.png")
    names = _class_names(comparison)
    figure = Figure(figsize=(max(6, len(names) * 0.45), 3.5))
    axes = figure.subplots()
    width = 0.8 / max(1, len(comparison.results))
    positions = np.arange(len(names))
    for offset, result in enumerate(comparison.results):
        values = [_iou(result, name) or 0.0 for name in names]
        axes.bar(positions + offset * width, values, width, label=result.method.upper())
    axes.set_xticks(
        positions + width * (len(comparison.results) - 1) / 2, names, rotation=60, ha="right"
    )
    axes.set_ylabel("IoU, %")
    axes.set_title("per-class IoU")
    axes.legend()
    charts["per_class"] = _save_figure(figure, folder / "per_class.png")
    return charts


def _display_labels(ids: np.ndarray, ignore_label: int) -> np.ndarray:
    shown = ids.astype(np.int64).copy()
    shown[ids == ignore_label] = NO_CLASS
    return shown


def write_disagreements(comparison: Comparison, folder: Path) -> list[tuple[str, float, Path]]:
    """One strip per disagreement image: input | ground truth | each method's prediction."""
    written = []
    space = comparison.results[0].space
    for item in comparison.disagreements:
        rgb = read_image(item.sample.image, exif_transpose=False).rgb
        gt = _display_labels(
            space.convert_gt(read_label_map(item.sample.label)), space.ignore_label
        )
        panels = [Panel("ground truth", overlay(rgb, gt, space.class_names))]
        for result in comparison.results:
            ids = read_label_map(result.folder / "predictions" / f"{item.sample.stem}.png")
            note = "untrained tiny weights" if result.untrained else None
            panels.append(
                Panel(result.method.upper(), overlay(rgb, ids, result.space.class_names), note)
            )
        picture = side_by_side(rgb, panels)
        path = write_atomic(
            folder / f"{item.sample.stem}.png",
            lambda file, p=picture: Image.fromarray(p).save(file, format="PNG"),
        )
        written.append((item.sample.stem, item.score, path))
    return written


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _tables(comparison: Comparison) -> dict[str, tuple[list[str], list[list[str]]]]:
    definition = comparison.settings.definition
    summary = (
        ["method", "label space", "images", *SUMMARY],
        [
            [r.method.upper(), r.space.name, str(r.metrics["num_images"])]
            + [_number(r.metrics[m]) for m in SUMMARY]
            for r in comparison.results
        ],
    )
    others = [d for d in DEFINITION_NOTES if d != definition]
    definitions = (
        ["method", *[f"mIoU {d}" for d in [definition, *others]]],
        [
            [r.method.upper(), *[_number(r.by_definition[d]) for d in [definition, *others]]]
            for r in comparison.results
        ],
    )
    per_class = (
        ["class", *[r.method.upper() for r in comparison.results]],
        [
            [name, *[_number(_iou(r, name)) for r in comparison.results]]
            for name in _class_names(comparison)
        ],
    )
    runtime = (
        [
            "method",
            "median s / image",
            "images timed",
            "peak RSS (MiB)",
            "peak device (MiB)",
            "device",
        ],
        [
            [
                r.method.upper(),
                _number(r.median_seconds),
                str(len(r.seconds)),
                _megabytes(r.peak_rss_bytes),
                _megabytes(r.peak_device_bytes),
                str(r.metrics.get("provenance", {}).get("device")),
            ]
            for r in comparison.results
        ],
    )
    return {
        "summary": summary,
        "definitions": definitions,
        "per_class": per_class,
        "runtime": runtime,
    }


def _header_lines(comparison: Comparison) -> list[str]:
    settings = comparison.settings
    protocol = (
        "harmonised: the dataset's label space, canonical class names and the ViLD templates for every method"
        if settings.harmonised
        else "native: each method with its original input size, templates, class-name spelling and label space"
    )
    lines = [
        f"Dataset: {settings.dataset}"
        + (f" (first {settings.limit} images)" if settings.limit else ""),
        f"Protocol: {protocol}",
        f"Definition: {settings.definition} ({DEFINITION_NOTES[settings.definition]})",
    ]
    untrained = [r.method.upper() for r in comparison.results if r.untrained]
    if untrained:
        lines.append(
            f"UNTRAINED tiny weights for {', '.join(untrained)}: these numbers exercise the "
            "pipeline and mean nothing about the methods"
        )
    return lines


def write_markdown(comparison: Comparison, path: Path, charts: dict[str, Path], strips) -> Path:
    tables = _tables(comparison)
    parts = [f"# OVSS comparison on {comparison.settings.dataset}", ""]
    parts += [f"- {line}" for line in _header_lines(comparison)] + [""]
    titles = {
        "summary": "Metrics",
        "definitions": "mIoU under every definition",
        "per_class": "Per-class IoU (%), classes present in the images",
        "runtime": "Speed and memory",
    }
    for key, title in titles.items():
        parts += [f"## {title}", "", _markdown_table(*tables[key]), ""]
    parts += ["## Charts", ""] + [
        f"![{k}]({p.relative_to(path.parent)})" for k, p in charts.items()
    ]
    parts += ["", "## Where the methods disagree most", ""]
    for stem, score, strip in strips:
        parts += [
            f"### {stem}: {100 * score:.1f} % of scored pixels differ",
            "",
            f"![{stem}]({strip.relative_to(path.parent)})",
            "",
        ]
    parts += ["Notes on the definitions:", ""] + [
        f"- {k}: {v}" for k, v in DEFINITION_NOTES.items()
    ]
    text = "\n".join(parts) + "\n"
    return write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(comparison: Comparison, path: Path, charts: dict[str, Path], strips) -> Path:
    tables = _tables(comparison)
    lines = "".join(
        f"<p class='warn'>{html.escape(line)}</p>"
        if line.startswith("UNTRAINED")
        else f"<p>{html.escape(line)}</p>"
        for line in _header_lines(comparison)
    )
    images = "".join(
        f"<img src='{html.escape(str(p.relative_to(path.parent)))}' alt='{html.escape(k)}'>"
        for k, p in charts.items()
    )
    disagreements = "".join(
        f"<h3>{html.escape(stem)}: {100 * score:.1f} % of scored pixels differ</h3>"
        f"<img class='wide' src='{html.escape(str(strip.relative_to(path.parent)))}' alt='{html.escape(stem)}'>"
        for stem, score, strip in strips
    )
    notes = "".join(
        f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in DEFINITION_NOTES.items()
    )
    text = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>OVSS comparison: {html.escape(comparison.settings.dataset)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em}img{margin:.5em}img.wide{max-width:100%}"
        ".warn{color:#b00;font-weight:bold}</style></head><body>"
        f"<h1>OVSS comparison on {html.escape(comparison.settings.dataset)}</h1>{lines}"
        f"<h2>Metrics</h2>{_html_table(*tables['summary'])}"
        f"<h2>mIoU under every definition</h2>{_html_table(*tables['definitions'])}"
        f"<h2>Speed and memory</h2>{_html_table(*tables['runtime'])}"
        f"<h2>Charts</h2>{images}"
        f"<h2>Per-class IoU (%)</h2>{_html_table(*tables['per_class'])}"
        f"<h2>Where the methods disagree most</h2>{disagreements}"
        f"<h2>Definitions</h2><ul>{notes}</ul></body></html>"
    )
    return write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def write_report(comparison: Comparison) -> dict[str, Path]:
    """Write every report file under ``comparison.settings.out``; returns their paths."""
    out = comparison.settings.out
    charts = write_charts(comparison, out / "charts")
    strips = write_disagreements(comparison, out / "disagreements")
    return {
        "markdown": write_markdown(comparison, out / "report.md", charts, strips),
        "html": write_html(comparison, out / "report.html", charts, strips),
        "csv": write_csv(comparison, out / "metrics.csv"),
    }
