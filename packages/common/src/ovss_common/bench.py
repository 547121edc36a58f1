"""Timing helpers of the methods' ``bench`` sessions (torch imported inside, and only for
CUDA devices and ``start_bench``)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovss_common.class_lists import method_names
from ovss_common.images import read_image
from ovss_common.outputs import write_json
from ovss_common.server import peak_rss_bytes
from ovss_common.torch_runtime import DTYPE_NAMES, configure, torch_dtype


def timed(function: Callable[[], Any], device: Any) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds, result)`` of one call (synchronised on CUDA)."""
    synchronize = _synchronizer(device)
    synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def _synchronizer(device: Any) -> Callable[[], None]:
    """``torch.cuda.synchronize`` on a CUDA device; nothing elsewhere (torch not imported)."""
    if device.type != "cuda":
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)


def summary(runs: list[tuple[float, float, Any]]) -> dict[str, Any]:
    """Median wall and CPU seconds of ``timed`` runs, and every run."""
    return {
        "seconds_median": statistics.median(r[0] for r in runs),
        "process_cpu_seconds_median": statistics.median(r[1] for r in runs),
        "runs": [{"seconds": r[0], "process_cpu_seconds": r[1]} for r in runs],
    }


def device_name(device: Any) -> str:
    """The GPU's name, or the CPU model from ``/proc/cpuinfo``."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def bench_images(folder: Path, count: int | None, first: str | None = None) -> list[Path]:
    """The first ``count`` images of ``folder`` (sorted by name, ``first`` put in front)."""
    paths = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: (p.name != first, p.name),
    )
    return paths[:count] if count else paths


def record_images(
    result: dict[str, Any], runs: list[tuple[float, float, Any]], device: Any, out: Path
) -> None:
    """Add the per-image summary and peak memory to ``result`` and write it to ``out``."""
    result["image"] = summary(runs)
    result["peak_rss_bytes"] = peak_rss_bytes()
    if device.type == "cuda":
        import torch

        result["peak_device_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    write_json(out, result)


def bench_parser(description: str, images: int | None) -> argparse.ArgumentParser:
    """The options every bench takes: ``--folder``, ``--images`` (default ``images``; None =
    all), ``--device``, ``--dtype``, ``--threads``, ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--folder", type=Path, required=True, help="folder of images")
    parser.add_argument("--images", type=int, default=images, help="use the first N images")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    return parser


@dataclass
class BenchSetup:
    """The resolved common options: device, dtype, images, and the result's header."""

    device: Any
    dtype: Any
    paths: list[Path]
    result: dict[str, Any]


def start_bench(args: argparse.Namespace, what: str, first: str | None = None) -> BenchSetup:
    """Apply threads (TF32 off), resolve device and dtype, list the images; SystemExit with a
    one-line message when the folder has none."""
    import torch

    if not args.folder.is_dir():
        raise SystemExit(f"bench: error: {args.folder} is not a folder")
    runtime = configure(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    paths = bench_images(args.folder, args.images, first)
    if not paths:
        raise SystemExit(f"bench: error: no images in {args.folder}")
    result = {
        "what": what,
        "device": str(device),
        "device_name": device_name(device),
        "dtype": args.dtype,
        **runtime,
    }
    return BenchSetup(device, torch_dtype(args.dtype), paths, result)


def bench_vocabularies(method: str) -> dict[str, list[str]]:
    """``method``'s names of VOC's 20 classes and of ADE20K's 150 (text-encoding benches)."""
    return {
        "voc_20": [name for name in method_names("voc-21", method) if name is not None],
        "ade_150": [name.strip() for name in method_names("ade20k-150", method)],
    }


def measure_text_encoding(
    result: dict[str, Any],
    vocabularies: dict[str, list[str]],
    encode: Callable[[list[str]], Any],
    clear: Callable[[], None],
    repeats: int,
    device: Any,
    out: Path,
    templates: int | None = None,
) -> None:
    """Time ``encode(names)`` of every vocabulary ``repeats`` times, ``clear()`` (the text
    cache) before each; ``result["text_encoding"][name]`` gets the classes (and prompts, given
    the number of ``templates``) and the ``summary``, written to ``out`` after each."""
    result["text_encoding"] = {}
    for name, names in vocabularies.items():
        runs = []
        for _ in range(repeats):
            clear()
            runs.append(timed(lambda names=names: encode(names), device))
        counts = {"classes": len(names)}
        if templates is not None:
            counts["prompts"] = len(names) * templates
        result["text_encoding"][name] = {**counts, **summary(runs)}
        write_json(out, result)


def measure_images(
    result: dict[str, Any],
    paths: list[Path],
    run: Callable[[Any], Any],
    device: Any,
    out: Path,
    *,
    exif_transpose: bool,
    repeats: int = 1,
    warmup: bool = False,
    describe: Callable[[Any], dict[str, Any]] = lambda outcome: {},
) -> None:
    """Time ``run(rgb)`` on each image of ``paths`` (decoded as the method does)
    ``repeats`` times, after one untimed run on the first image when ``warmup``.

    ``result["per_image"][name]`` gets the image's ``hw``, ``describe`` of the last run's
    outcome and the runs' ``summary``; ``record_images`` writes ``result`` to ``out`` after
    every image.
    """
    images = [read_image(path, exif_transpose=exif_transpose).rgb for path in paths]
    if warmup and images:
        run(images[0])
    per_image: dict[str, Any] = {}
    runs: list[tuple[float, float, Any]] = []
    for path, rgb in zip(paths, images, strict=True):
        image_runs = [timed(lambda rgb=rgb: run(rgb), device) for _ in range(repeats)]
        per_image[path.name] = {
            "hw": list(rgb.shape[:2]),
            **describe(image_runs[-1][2]),
            **summary(image_runs),
        }
        runs += [(wall, cpu, None) for wall, cpu, _ in image_runs]
        result["per_image"] = per_image
        record_images(result, runs, device, out)
        seconds = statistics.median(r[0] for r in image_runs)
        print(f"bench: {path.name}: {seconds:.2f} s", file=sys.stderr)
    print(f"bench: wrote {out}", file=sys.stderr)
