"""Timing helpers of the methods' ``bench`` sessions (torch imported inside)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ovss_common.outputs import write_json
from ovss_common.server import peak_rss_bytes


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
