"""Sweep throughput (``nox -s bench-sweep``): images per minute of a fresh sweep with each
worker count, written to a JSON file after each count."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ovss.checkpoints import SweepModel
from ovss.ray_cluster import import_ray, init_ray
from ovss.sweep import SweepSettings, run_sweep
from ovss.worker import model_settings
from ovss_common.outputs import write_json


def bench(
    method: str, dataset: str, out: Path, workers: tuple[int, ...] = (1, 2), tiny: bool = True
) -> dict[str, Any]:
    """Images per minute of a fresh sweep of ``method`` on ``dataset`` with each worker count.

    Each count gets its own embedded Ray (start time reported apart) and an empty folder, so
    every image is predicted; the result is written to ``out`` after each count.
    """
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
    parser.add_argument("--method", required=True, help="a method with a tiny fixture")
    parser.add_argument("--dataset", default="mini-voc")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("results") / "bench" / "sweep.json")
    arguments = parser.parse_args()
    bench(arguments.method, arguments.dataset, arguments.out, tuple(arguments.workers))
