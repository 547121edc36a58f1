"""``python -m ovss_san.training.bench``: seconds per training iteration and peak memory of the
full-size SAN (random weights, the recipe's 640x640 crops, 171 COCO-Stuff names).

For each ``--batch`` (images per iteration, one process) and ``--amp`` mode (CUDA only) it
runs ``--iterations`` optimisation steps after one warm-up step and records the median wall
and process-CPU seconds per iteration, the peak resident memory, and the peak device memory
on CUDA. The text embeddings of the vocabulary are computed once, before, and timed apart.
Results are written to ``--out`` (JSON) after every measurement.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ovss_common.bench import device_name, timed
from ovss_common.class_lists import method_names
from ovss_common.outputs import write_json
from ovss_common.server import peak_rss_bytes
from ovss_common.torch_runtime import configure, peak_device_memory
from ovss_san.build import build_san
from ovss_san.config import get_config
from ovss_san.models import MODELS
from ovss_san.training.mapper import TrainSample
from ovss_san.training.points import SeededPoints
from ovss_san.training.step import AMP_DTYPES, TrainingStep

#: Ground-truth classes per synthetic crop (COCO-Stuff crops hold a handful).
CLASSES_PER_CROP = 6


def synthetic_batch(size: int, crop: int, classes: int) -> list[TrainSample]:
    """``size`` crops of ``crop`` x ``crop`` with ``CLASSES_PER_CROP`` rectangular regions."""
    rng = np.random.default_rng(0)
    batch = []
    for _ in range(size):
        image = rng.integers(0, 256, (3, crop, crop), dtype=np.uint8)
        ids = np.sort(rng.choice(classes, CLASSES_PER_CROP, replace=False))
        masks = np.zeros((CLASSES_PER_CROP, crop, crop), dtype=bool)
        band = crop // CLASSES_PER_CROP
        for index in range(CLASSES_PER_CROP):
            masks[index, index * band : (index + 1) * band] = True
        label = np.full((crop, crop), 255, dtype=np.int64)
        for index, class_id in enumerate(ids):
            label[masks[index]] = class_id
        batch.append(
            TrainSample(
                image=torch.from_numpy(image),
                sem_seg=torch.from_numpy(label),
                gt_classes=torch.from_numpy(ids.astype(np.int64)),
                gt_masks=torch.from_numpy(masks),
            )
        )
    return batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS.models), default=MODELS.default)
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="images per step")
    parser.add_argument("--amp", nargs="+", default=["none"], choices=["none", *AMP_DTYPES])
    parser.add_argument("--iterations", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runtime = configure(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = MODELS.entry(args.model).config
    cfg = get_config(config)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_san(cfg, config.parent).to(device)
    vocabulary = method_names("coco-stuff-171", "san")
    result: dict = {
        "what": f"SAN {args.model} training step, random weights, one process",
        "device": str(device),
        "device_name": device_name(device),
        **runtime,
        "model_build_seconds": time.perf_counter() - start,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "crop": list(cfg.INPUT.CROP.SIZE),
        "train_num_points": cfg.MODEL.SAN.TRAIN_NUM_POINTS,
        "vocabulary": len(vocabulary),
        "runs": [],
    }
    with torch.no_grad():
        wall, cpu, _ = timed(lambda: model.ov_classifier.encode_names(vocabulary), device)
    model.ov_classifier.clear_cache()
    result["text_encoding"] = {"wall_seconds": wall, "cpu_seconds": cpu}
    write_json(args.out, result)
    crop = int(cfg.INPUT.CROP.SIZE[0])
    for amp in args.amp:
        if amp != "none" and device.type != "cuda":
            print(f"bench: --amp {amp} needs CUDA; skipped", file=sys.stderr)
            continue
        for size in args.batch:
            training = TrainingStep(model, cfg, vocabulary, None if amp == "none" else amp)
            batch = synthetic_batch(size, crop, len(vocabulary))
            steps = []
            for step in range(args.iterations + 1):
                points = SeededPoints([step * size + i for i in range(size)], device)
                run = functools.partial(training.run, batch, points)
                steps.append(timed(run, device))
            timings = steps[1:]
            result["runs"].append(
                {
                    "batch": size,
                    "amp": amp,
                    "first_step_seconds": steps[0][0],
                    "seconds_per_iteration": statistics.median(t[0] for t in timings),
                    "cpu_seconds_per_iteration": statistics.median(t[1] for t in timings),
                    "peak_rss_bytes": peak_rss_bytes(),
                    **peak_device_memory(str(device)),
                }
            )
            write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
