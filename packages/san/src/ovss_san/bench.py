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

import torch

from ovss_common.bench import (
    bench_parser,
    bench_vocabularies,
    measure_images,
    measure_text_encoding,
    start_bench,
)
from ovss_san.build import build_san
from ovss_san.config import get_config
from ovss_san.models import MODELS
from ovss_san.predictor import SanPredictor


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], images=None)
    parser.add_argument("--model", choices=sorted(MODELS.models), default=MODELS.default)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    setup = start_bench(args, f"SAN {args.model}, random weights, eval path")
    device, result = setup.device, setup.result
    result["repeats"] = args.repeats
    start = time.perf_counter()
    config = MODELS.entry(args.model).config
    cfg = get_config(config)
    torch.manual_seed(0)
    model = build_san(cfg, config.parent).to(device=device, dtype=setup.dtype)
    result["model_build_seconds"] = time.perf_counter() - start
    predictor = SanPredictor(model, cfg)
    classifier = model.ov_classifier
    vocabularies = bench_vocabularies("san")

    def encode(names: list[str]) -> object:
        with torch.inference_mode():
            return classifier(names)

    measure_text_encoding(
        result, vocabularies, encode, classifier.clear_cache, args.repeats, device, args.out, 14
    )
    vocabulary = vocabularies["voc_20"]

    def predict(rgb: object) -> object:
        with torch.inference_mode():
            return predictor.predict(rgb, vocabulary, keep_scores=False)

    measure_images(
        result,
        setup.paths,
        predict,
        device,
        args.out,
        exif_transpose=True,
        repeats=args.repeats,
        warmup=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
