"""The CaR worker: ``python -m ovss_car.worker`` serves the OVSS protocol on stdin/stdout.

``config`` is a CaR YAML config, or the name of a shipped one (``ade_150``, ``pascal_context``;
default: ``voc``); the ``model`` option names a shipped config too, as SAN's and OVSeg's name
their released models (CaR has no weights of its own: a config is its released setting);
``weights`` is a folder in which the
config's two checkpoint names are looked up. Official names (``ViT-B/16``, ``ViT-L/14``) come
from the weights zoo unless the folder holds their files. A ``segment`` request's ``stuff``
names get CaR's second pass (thing vocabulary as CAM background); label indices are positions
in the vocabulary as sent, 65535 where CaR assigns nothing. Images are not EXIF-rotated, as
in the original.

The ``sam`` option turns on the optional SAM refinement of every pass's masks: ``true`` takes
the config's ``sam.sam_checkpoint`` when that file exists, else the released checkpoint of
``sam.model_type`` from the zoo; a string is a checkpoint path.

The ``random_weights`` option (``true``) builds the two CLIPs the config names (official names
only) with OpenAI's random initialisation, seeded, instead of loading checkpoints.

``semantic_templates`` (a list of strings with ``{}``) replaces the config's classifier
templates, and ``voc_names: false`` stops the VOC name swap: together they run CaR under the
harness's harmonised protocol.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from clip.model import CLIP
from PIL import Image

from ovss_car.car import CaR, assign_labels
from ovss_car.clip_model import load_clip, random_clip
from ovss_car.config import CONFIG_DIR, CarConfig, config_file, load_config, shipped_configs
from ovss_car.sam import SamRefiner, refine_masks
from ovss_car.zoo import SAM_WEIGHTS, WEIGHTS
from ovss_common.checkpoints import CheckpointError
from ovss_common.class_lists import class_file
from ovss_common.clip_geometry import OPENAI_CLIP_GEOMETRIES
from ovss_common.hashing import sha256_files
from ovss_common.images import DecodedImage
from ovss_common.loading import (
    check_options,
    model_provenance,
    released_weights,
    use_random_weights,
)
from ovss_common.protocol import (
    NO_CLASS,
    InspectRequest,
    LoadRequest,
    SegmentRequest,
    WorkerError,
)
from ovss_common.server import Method, Segmentation, run
from ovss_common.torch_runtime import (
    configure,
    default_device,
    move,
    peak_device_memory,
    resolve_dtype,
)

DEFAULT_CONFIG = CONFIG_DIR / "voc.yaml"


def checkpoint_path(name: str, folder: Path | None, config_dir: Path) -> str:
    """Where the checkpoint a config names lives (see the module docstring)."""
    if folder is not None and (folder / name).is_file():
        return str(folder / name)
    if name in WEIGHTS:
        entry = WEIGHTS[name]
        if folder is not None and (folder / entry.filename).is_file():
            return str(folder / entry.filename)
        return released_weights(entry)
    candidate = (folder or config_dir) / name
    if not candidate.is_file():
        raise WorkerError("bad_checkpoint", f"{candidate}: no such checkpoint file", str(candidate))
    return str(candidate)


def requested_config(request: LoadRequest) -> Path:
    """The config a load asks for: the ``model`` option (a shipped config's name), else
    ``config`` (a path or a shipped config's name), else the VOC config."""
    model = request.options.get("model")
    if model is None:
        return config_file(request.config) if request.config else DEFAULT_CONFIG
    if request.config:
        raise WorkerError("bad_option", "give the model option or a config, not both", "model")
    if model not in shipped_configs():
        raise WorkerError(
            "bad_option", f"unknown model {model!r} (have {', '.join(shipped_configs())})", "model"
        )
    return CONFIG_DIR / f"{model}.yaml"


def voc_names(names: list[str]) -> list[str]:
    """CaR's VOC config swaps a plain VOC class name for its longer CaR name ("bird" ->
    "bird avian"); other names are kept."""
    voc = class_file("voc-21")
    longer = dict(zip(voc["names"], voc["methods"]["car"], strict=True))
    return [longer.get(name) or name for name in names]


def random_clips(names: tuple[str, ...], config: Path) -> list[CLIP]:
    """The CLIPs a config names, built with random weights (official names only)."""
    unknown = [name for name in names if name not in OPENAI_CLIP_GEOMETRIES]
    if unknown:
        raise WorkerError(
            "bad_config",
            f"random weights need official CLIP names ({', '.join(OPENAI_CLIP_GEOMETRIES)}); "
            f"the config names {unknown[0]!r}",
            str(config),
        )
    return [random_clip(name) for name in names]


class CarMethod(Method):
    name = "car"
    exif_transpose = False

    def load(self, request: LoadRequest) -> dict[str, Any]:
        check_options(
            request.options,
            ("model", "sam", "random_weights", "semantic_templates", "voc_names"),
            "CaR",
        )
        device = request.device or default_device()
        dtype = resolve_dtype(request.dtype, device)
        runtime = configure(request.threads)
        config_path = requested_config(request)
        try:
            self.config: CarConfig = load_config(config_path)
        except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
            raise WorkerError("bad_config", str(exc).splitlines()[0], str(config_path)) from None
        templates = request.options.get("semantic_templates")
        if templates is not None:
            if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
                raise WorkerError(
                    "bad_option",
                    "semantic_templates must be a non-empty list of strings with {}",
                    "semantic_templates",
                )
            self.config = self.config.with_car(semantic_templates=list(templates))
        self.rename_voc = bool(request.options.get("voc_names", True))
        folder = Path(request.weights) if request.weights else None
        if folder is not None and not folder.is_dir():
            raise WorkerError(
                "bad_checkpoint", f"{folder}: CaR weights must be a folder", str(folder)
            )
        self.refiner = self.sam_refiner(request.options.get("sam", False), device)
        random_weights = use_random_weights(request.options, request.weights)
        names = (self.config.cam_checkpoint, self.config.semantic_checkpoint)
        paths = (
            []
            if random_weights
            else [checkpoint_path(name, folder, config_path.parent) for name in names]
        )
        try:
            clips = random_clips(names, config_path) if random_weights else map(load_clip, paths)
            cam_clip, sem_clip = (move(clip, device, dtype) for clip in clips)
        except CheckpointError as exc:
            raise WorkerError("bad_checkpoint", str(exc), str(folder)) from None
        self.model = CaR(cam_clip, sem_clip)
        self.device = device
        provenance = model_provenance(
            "ovss-car", request, str(config_path), config_path.read_text(), None
        )
        provenance.update(
            weights=str(folder) if folder else None,
            weights_sha256=sha256_files(paths) if paths else None,
            random_weights=random_weights,
            checkpoints=paths,
            sam_checkpoint=self.refiner.checkpoint if self.refiner else None,
            device=device,
            **runtime,
        )
        return provenance

    def sam_refiner(self, option: object, device: str) -> SamRefiner | None:
        """The SAM refiner the ``sam`` option asks for (see the module docstring)."""
        if option is False or option is None:
            return None
        if isinstance(option, str):
            checkpoint = option
        elif option is True:
            model_type = self.config.sam_model_type
            if self.config.sam_checkpoint is not None:
                checkpoint = str(self.config.sam_checkpoint)
            elif model_type in SAM_WEIGHTS:
                checkpoint = released_weights(SAM_WEIGHTS[model_type])
            else:
                raise WorkerError(
                    "bad_config",
                    f"sam.model_type {model_type!r} is not one of {', '.join(SAM_WEIGHTS)}",
                    str(self.config.path),
                )
        else:
            raise WorkerError("bad_option", "sam must be true, false or a checkpoint path", "sam")
        try:
            return SamRefiner(checkpoint, self.config.sam_settings(), device)
        except CheckpointError as exc:
            raise WorkerError("bad_checkpoint", str(exc), checkpoint) from None

    @property
    def renames_voc(self) -> bool:
        """Whether plain VOC names become CaR's longer ones (the VOC config, unless turned off)."""
        return self.rename_voc and self.config.dataset == "voc"

    def segment(self, image: DecodedImage, request: SegmentRequest) -> Segmentation:
        start = time.perf_counter()
        picture = Image.fromarray(image.rgb)
        sent = list(request.vocabulary)
        names = voc_names(sent) if self.renames_voc else sent
        stuff = set(request.stuff or ())
        things = [i for i, name in enumerate(sent) if name not in stuff]
        stuffs = [i for i, name in enumerate(sent) if name in stuff]
        passes, details = [], {}
        thing_names = [names[i] for i in things]
        if stuffs:
            settings = self.config.pass_settings(stuff=True, background=thing_names)
            result = self.model.run(picture, [names[i] for i in stuffs], settings)
            passes.append((result, stuffs))
            details["stuff_steps"] = len(result.steps)
        if things:
            result = self.model.run(picture, thing_names, self.config.pass_settings())
            passes.append((result, things))
            details["steps"] = len(result.steps)
        timings = {"model": time.perf_counter() - start}
        if self.refiner is not None:
            ran = time.perf_counter()
            sam_masks = self.refiner.sam_masks(image.rgb)
            for result, _ in passes:
                result.masks = refine_masks(result.masks, sam_masks, self.refiner.settings)
            details["sam_masks"] = len(sam_masks)
            timings["sam"] = time.perf_counter() - ran
        ran = time.perf_counter()
        labels = assign_labels(passes, image.rgb.shape[:2], NO_CLASS)
        scores = None
        if request.save_scores:
            scores = np.zeros((len(sent), *image.rgb.shape[:2]), np.float32)
            for result, ids in passes:
                for position, index in enumerate(ids):
                    scores[index] = result.masks[position] * result.scores[position]
        details["kept"] = [
            sent[i]
            for result, ids in passes
            for i, s in zip(ids, result.scores, strict=True)
            if s > 0
        ]
        details.update(peak_device_memory(self.device))
        return Segmentation(
            label_map=labels,
            vocabulary=sent,
            scores=scores,
            timings={**timings, "postprocess": time.perf_counter() - ran},
            extra=details,
        )

    def inspect(self, image: DecodedImage, request: InspectRequest) -> dict[str, Any]:
        from ovss_car.inspection import inspect_car

        check_options(request.options, (), "CaR inspect")
        text_names = voc_names if self.renames_voc else list
        settings = self.config.pass_settings()
        return inspect_car(self.model, settings, image.rgb, request.vocabulary, text_names)


def main() -> None:
    run(CarMethod())


if __name__ == "__main__":
    main()
