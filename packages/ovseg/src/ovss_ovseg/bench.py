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

from ovss_common.bench import (
    bench_parser,
    bench_vocabularies,
    measure_images,
    measure_text_encoding,
    start_bench,
)
from ovss_ovseg.build import build_ovseg
from ovss_ovseg.config import get_config
from ovss_ovseg.models import MODELS
from ovss_ovseg.predictor import OVSegPredictor, Prediction


def regions(prediction: Prediction) -> dict[str, Any]:
    """How many regions went to CLIP, and the stage timings."""
    found = prediction.classification.regions
    return {
        "regions_to_clip": int(found.valid.sum()) if found is not None else 0,
        "timings": prediction.timings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], images=1)
    parser.add_argument("--model", choices=sorted(MODELS.models), default=MODELS.default)
    parser.add_argument("--ensemble-weight", type=float, default=0.45)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    what = f"OVSeg {args.model}, random weights, eval path, ensemble weight {args.ensemble_weight}"
    setup = start_bench(args, what)
    device, result = setup.device, setup.result
    result["repeats"] = args.repeats
    start = time.perf_counter()
    cfg = get_config(
        MODELS.entry(args.model).config,
        ["MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT", str(args.ensemble_weight)],
    )
    torch.manual_seed(0)
    model = build_ovseg(cfg).to(device=device, dtype=setup.dtype)
    result["model_build_seconds"] = time.perf_counter() - start
    adapter = model.clip_adapter
    vocabularies = bench_vocabularies("ovseg")
    measure_text_encoding(
        result,
        vocabularies,
        adapter.class_embeddings,
        adapter._cache.clear,
        args.repeats,
        device,
        args.out,
    )
    predictor = OVSegPredictor(model, cfg)
    vocabulary = vocabularies["voc_20"]
    measure_images(
        result,
        setup.paths,
        lambda rgb: predictor.predict(rgb, vocabulary),
        device,
        args.out,
        exif_transpose=True,
        repeats=args.repeats,
        warmup=True,
        describe=regions,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
