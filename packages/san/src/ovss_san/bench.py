"""``python -m ovss_san.bench``: SAN speed and memory at full size, random weights.

Measures, on the CPU or a GPU, for a released architecture (default ViT-B/16):

- text encoding of a vocabulary (20 VOC and 150 ADE names, 14 templates each) with an
  empty cache: median of ``--repeats`` runs, wall and process-CPU seconds;
- the eval path per image (resize, network, postprocess) with the class embeddings cached:
  one warm-up, then every image ``--repeats`` times; median wall and process-CPU seconds;
- peak resident memory of the process (and peak device memory on CUDA).

Results are written to ``--out`` (JSON) after every measurement, so an interrupted run keeps
what it measured.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import torch

from ovss_common.bench import bench_parser, record_images, start_bench, summary, timed
from ovss_common.class_lists import method_names
from ovss_common.images import read_image
from ovss_common.outputs import write_json
from ovss_san.build import MODEL_CONFIGS, build_san
from ovss_san.config import get_config
from ovss_san.predictor import SanPredictor


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], images=None)
    parser.add_argument("--model", choices=sorted(MODEL_CONFIGS), default="san_vit_b_16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    setup = start_bench(args, f"SAN {args.model}, random weights, eval path")
    device, dtype, paths, result = setup.device, setup.dtype, setup.paths, setup.result
    result["repeats"] = args.repeats
    start = time.perf_counter()
    cfg = get_config(MODEL_CONFIGS[args.model])
    torch.manual_seed(0)
    model = build_san(cfg).to(device=device, dtype=dtype)
    result["model_build_seconds"] = time.perf_counter() - start
    predictor = SanPredictor(model, cfg)
    classifier = model.ov_classifier

    vocabularies = {
        "voc_20": [n for n in method_names("voc-21", "san") if n is not None],
        "ade_150": [n.strip() for n in method_names("ade20k-150", "san")],
    }
    result["text_encoding"] = {}
    for name, names in vocabularies.items():
        runs = []
        for _ in range(args.repeats):
            classifier.clear_cache()
            with torch.inference_mode():
                runs.append(timed(lambda names=names: classifier(names), device))
        result["text_encoding"][name] = {
            "classes": len(names),
            "prompts": len(names) * 14,
            **summary(runs),
        }
        write_json(args.out, result)

    vocabulary = vocabularies["voc_20"]
    images = [read_image(path, exif_transpose=True).rgb for path in paths]
    with torch.inference_mode():
        predictor.predict(images[0], vocabulary, keep_scores=False)
    per_image: dict[str, Any] = {}
    runs: list[tuple[float, float]] = []
    for path, rgb in zip(paths, images, strict=True):
        image_runs = []
        for _ in range(args.repeats):
            with torch.inference_mode():
                image_runs.append(
                    timed(
                        lambda rgb=rgb: predictor.predict(rgb, vocabulary, keep_scores=False),
                        device,
                    )
                )
        runs += image_runs
        per_image[path.name] = {"hw": list(rgb.shape[:2]), **summary(image_runs)}
        result["per_image"] = per_image
        record_images(result, runs, device, args.out)
        print(f"bench: {path.name}: {np.median([r[0] for r in image_runs]):.2f} s", file=sys.stderr)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
