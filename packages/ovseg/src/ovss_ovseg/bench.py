"""``python -m ovss_ovseg.bench``: OVSeg speed and memory at full size, random weights.

Measures, for a released architecture (default Swin-B + CLIP ViT-L/14, eval path, the VOC
ensemble weight 0.45):

- text encoding of a vocabulary (20 VOC and 150 ADE names, 14 templates each) with an empty
  cache: median of ``--repeats`` runs, wall and process-CPU seconds;
- the eval path per image (resize, proposals, CLIP on the valid regions, ensemble,
  postprocess) with the text embeddings cached: one warm-up, then each of the first
  ``--images`` images ``--repeats`` times; how many regions went to CLIP;
- peak resident memory of the process (and peak device memory on CUDA).

Results are written to ``--out`` (JSON) after every measurement.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

from ovss_common.bench import bench_parser, record_images, start_bench, summary, timed
from ovss_common.class_lists import method_names
from ovss_common.images import read_image
from ovss_common.outputs import write_json
from ovss_ovseg.build import MODEL_CONFIGS, build_ovseg
from ovss_ovseg.config import get_config
from ovss_ovseg.predictor import OVSegPredictor


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], images=1)
    parser.add_argument(
        "--model", choices=sorted(MODEL_CONFIGS), default="ovseg_swinbase_vitL14_ft_mpt"
    )
    parser.add_argument("--ensemble-weight", type=float, default=0.45)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    what = f"OVSeg {args.model}, random weights, eval path, ensemble weight {args.ensemble_weight}"
    setup = start_bench(args, what)
    device, dtype, paths, result = setup.device, setup.dtype, setup.paths, setup.result
    result["repeats"] = args.repeats
    start = time.perf_counter()
    cfg = get_config(
        MODEL_CONFIGS[args.model],
        ["MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT", str(args.ensemble_weight)],
    )
    torch.manual_seed(0)
    model = build_ovseg(cfg).to(device=device, dtype=dtype)
    result["model_build_seconds"] = time.perf_counter() - start
    adapter = model.clip_adapter

    vocabularies = {
        "voc_20": [n for n in method_names("voc-21", "ovseg") if n is not None],
        "ade_150": [n.strip() for n in method_names("ade20k-150", "ovseg")],
    }
    result["text_encoding"] = {}
    for name, names in vocabularies.items():
        runs = []
        for _ in range(args.repeats):
            adapter._cache.clear()
            runs.append(timed(lambda names=names: adapter.class_embeddings(names), device))
        result["text_encoding"][name] = {"classes": len(names), **summary(runs)}
        write_json(args.out, result)

    predictor = OVSegPredictor(model, cfg)
    vocabulary = vocabularies["voc_20"]
    images = [read_image(path, exif_transpose=True).rgb for path in paths]
    predictor.predict(images[0], vocabulary)
    per_image: dict[str, Any] = {}
    runs: list[tuple[float, float, Any]] = []
    for path, rgb in zip(paths, images, strict=True):
        image_runs = [
            timed(lambda rgb=rgb: predictor.predict(rgb, vocabulary), device)
            for _ in range(args.repeats)
        ]
        runs += image_runs
        regions = image_runs[-1][2].classification.regions
        per_image[path.name] = {
            "hw": list(rgb.shape[:2]),
            "regions_to_clip": int(regions.valid.sum()) if regions is not None else 0,
            "timings": image_runs[-1][2].timings,
            **summary(image_runs),
        }
        result["per_image"] = per_image
        record_images(result, runs, device, args.out)
        print(f"bench: {path.name}: {image_runs[-1][0]:.1f} s", file=sys.stderr)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
