"""Timing helpers of the methods' ``bench`` sessions (torch imported inside)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovss_common.outputs import write_json
from ovss_common.server import peak_rss_bytes
from ovss_common.torch_runtime import DTYPE_NAMES, configure, torch_dtype


def timed(function: Callable[[], Any], device: Any) -> tuple[float, float, Any]:
    """``(wall seconds, process CPU seconds, result)`` of one call (synchronised on CUDA)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu, result


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
    import torch

    result["image"] = summary(runs)
    result["peak_rss_bytes"] = peak_rss_bytes()
    if device.type == "cuda":
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
