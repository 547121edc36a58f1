"""The CaR worker: ``python -m ovss_car.worker`` serves the OVSS protocol on stdin/stdout.

A thin adapter around ``CarPredictor``. The model comes from ``ovss_car.models.resolve``:
``config`` is a CaR YAML config or the name of a shipped one; the ``model`` option names a
shipped config (default ``voc``: CaR has no weights of its own, a config is its released
setting); ``weights`` is a folder in which the config's two checkpoint names are looked up
(``ovss_car.zoo.find_checkpoint``: official names also under OpenAI's or the mirror's file
name; without a folder, official names come from the weights zoo). A ``segment`` request's
``stuff`` names get CaR's second pass; label indices are positions in the vocabulary as sent,
65535 where CaR assigns nothing. Images are not EXIF-rotated, as in the original.

Options:

- ``sam``: SAM refinement of every pass's masks: ``true`` takes the config's
  ``sam.sam_checkpoint`` when that file exists, else the released checkpoint of
  ``sam.model_type`` from the zoo; a string is a checkpoint path.
- ``random_weights`` (``true``): the two CLIPs the config names (official names only) with
  OpenAI's random initialisation, seeded, instead of loaded checkpoints.
- ``semantic_templates``: the classifier templates instead of the config's: a list of strings
  with ``{}``, or ``"vild"`` for ``ovss_common.prompts.VILD_TEMPLATES``.
- ``voc_names`` (``false``): no VOC name swap. With ``semantic_templates: "vild"`` this is
  the harness's harmonised protocol.

An ``inspect`` request takes a ``stuff`` option (names of its vocabulary) for the stuff pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovss_car.config import CarConfig, load_config
from ovss_car.models import resolve
from ovss_car.predictor import CarPredictor, build_car
from ovss_car.sam import SamRefiner
from ovss_car.zoo import SAM_WEIGHTS, find_checkpoint
from ovss_common.checkpoints import CheckpointError
from ovss_common.hashing import sha256_files
from ovss_common.images import DecodedImage
from ovss_common.loading import check_options, model_provenance, released_weights
from ovss_common.prompts import VILD_TEMPLATES
from ovss_common.protocol import InspectRequest, LoadRequest, SegmentRequest, WorkerError
from ovss_common.server import Method, Segmentation, run
from ovss_common.torch_runtime import configure, default_device, peak_device_memory, resolve_dtype

#: Named template sets the ``semantic_templates`` option accepts.
TEMPLATE_SETS = {"vild": VILD_TEMPLATES}


def semantic_templates(value: object) -> list[str] | None:
    """The ``semantic_templates`` option as a list (None: the config's)."""
    if value is None:
        return None
    if isinstance(value, str) and value in TEMPLATE_SETS:
        return list(TEMPLATE_SETS[value])
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(t, str) and "{}" in t for t in value)
    ):
        raise WorkerError(
            "bad_option",
            f"semantic_templates must be {' or '.join(map(repr, TEMPLATE_SETS))} or a "
            "non-empty list of strings with {}",
            "semantic_templates",
        )
    return list(value)


def stuff_names(value: object, vocabulary: list[str]) -> list[str]:
    """The ``stuff`` option of an ``inspect``: names of the vocabulary."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(name in vocabulary for name in value):
        raise WorkerError("bad_option", "stuff must be a list of names of the vocabulary", "stuff")
    return list(value)


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
        templates = semantic_templates(request.options.get("semantic_templates"))
        resolved = resolve(request)
        try:
            config = load_config(resolved.config)
        except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
            raise WorkerError("bad_config", str(exc).splitlines()[0], resolved.config) from None
        if templates is not None:
            config = config.with_car(semantic_templates=templates)
        folder = Path(resolved.weights) if resolved.weights else None
        if folder is not None and not folder.is_dir():
            raise WorkerError(
                "bad_checkpoint", f"{folder}: CaR weights must be a folder", str(folder)
            )
        names = (config.cam_checkpoint, config.semantic_checkpoint)
        paths = (
            None
            if resolved.random_weights
            else [find_checkpoint(name, folder, config.path.parent) for name in names]
        )
        refiner = self.sam_refiner(config, request.options.get("sam", False), device)
        try:
            model = build_car(config, paths, device, dtype)
        except CheckpointError as exc:
            raise WorkerError("bad_checkpoint", str(exc), str(folder)) from None
        except ValueError as exc:
            raise WorkerError("bad_config", str(exc), str(config.path)) from None
        self.predictor = CarPredictor(
            model, config, refiner, rename_voc=bool(request.options.get("voc_names", True))
        )
        self.device = device
        provenance = model_provenance(
            "ovss-car", request, str(config.path), config.path.read_text(), None
        )
        provenance.update(
            model=resolved.model.name if resolved.model else None,
            weights=str(folder) if folder else None,
            weights_sha256=sha256_files(paths) if paths else None,
            random_weights=resolved.random_weights,
            checkpoints=paths or [],
            sam_checkpoint=refiner.checkpoint if refiner else None,
            device=device,
            **runtime,
        )
        return provenance

    @staticmethod
    def sam_refiner(config: CarConfig, option: object, device: str) -> SamRefiner | None:
        """The SAM refiner the ``sam`` option asks for (see the module docstring)."""
        if option is False or option is None:
            return None
        if isinstance(option, str):
            checkpoint = option
        elif option is True:
            model_type = config.sam_model_type
            if config.sam_checkpoint is not None:
                checkpoint = str(config.sam_checkpoint)
            elif model_type in SAM_WEIGHTS:
                checkpoint = released_weights(SAM_WEIGHTS[model_type])
            else:
                raise WorkerError(
                    "bad_config",
                    f"sam.model_type {model_type!r} is not one of {', '.join(SAM_WEIGHTS)}",
                    str(config.path),
                )
        else:
            raise WorkerError("bad_option", "sam must be true, false or a checkpoint path", "sam")
        try:
            return SamRefiner(checkpoint, config.sam_settings(), device)
        except CheckpointError as exc:
            raise WorkerError("bad_checkpoint", str(exc), checkpoint) from None

    @property
    def config(self) -> CarConfig:
        """The loaded config (with the options applied)."""
        return self.predictor.config

    @property
    def renames_voc(self) -> bool:
        return self.predictor.renames_voc

    def segment(self, image: DecodedImage, request: SegmentRequest) -> Segmentation:
        prediction = self.predictor.predict(
            image.rgb, request.vocabulary, request.stuff or (), keep_scores=request.save_scores
        )
        return Segmentation(
            label_map=prediction.label_map,
            vocabulary=prediction.vocabulary,
            scores=prediction.scores,
            timings=prediction.timings,
            extra={**prediction.details, **peak_device_memory(self.device)},
        )

    def inspect(self, image: DecodedImage, request: InspectRequest) -> dict[str, Any]:
        from ovss_car.inspection import inspect_car

        check_options(request.options, ("stuff",), "CaR inspect")
        vocabulary = list(request.vocabulary)
        stuff = stuff_names(request.options.get("stuff"), vocabulary)
        return inspect_car(self.predictor, image.rgb, vocabulary, stuff)


def main() -> None:
    run(CarMethod())


if __name__ == "__main__":
    main()
