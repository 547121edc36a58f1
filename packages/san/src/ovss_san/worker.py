"""The SAN worker: ``python -m ovss_san.worker`` serves the OVSS protocol on stdin/stdout.

Load options (``--option KEY=VALUE`` on the ovss command line):

- ``model``: a released model name (``san_vit_b_16``, ``san_vit_large_14``) used when no
  config is given; its weights come from the zoo unless ``weights`` is given;
- ``overrides``: a list of ``KEY VALUE`` config overrides (detectron2 style);
- ``expansion`` (demo pipeline only): ``none`` (default), ``COCO-all`` or ``COCO-stuff``:
  the original demo's vocabulary expansion, reported as one appended ``other`` class.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from ovss_common.class_lists import method_names
from ovss_common.hashing import sha256_file, sha256_text
from ovss_common.images import DecodedImage
from ovss_common.protocol import LoadRequest, SegmentRequest, WorkerError
from ovss_common.server import Method, Segmentation, run
from ovss_common.torch_runtime import (
    configure,
    default_device,
    move,
    peak_device_memory,
    resolve_dtype,
)
from ovss_common.zoo import WeightsError, fetch
from ovss_san.checkpoint import CheckpointError
from ovss_san.clip import ClipArchitectureError
from ovss_san.predictor import SanPredictor, expansion_names
from ovss_san.zoo import DEFAULT_MODEL, WEIGHTS

EXPANSIONS = ("none", "COCO-all", "COCO-stuff")
#: Largest ``[C, H, W]`` float32 score array a request may ask to save.
MAX_SCORE_BYTES = 4 << 30
#: COCO-Stuff 171: the first 80 ids are things, the remaining 91 stuff.
COCO_THINGS = 80
OPTIONS = ("model", "overrides", "expansion")


class San(Method):
    name = "san"
    exif_transpose = True

    def _resolve(self, request: LoadRequest) -> tuple[str, str | None]:
        """The config path and weights path of a load request (zoo for released models)."""
        model = request.options.get("model", DEFAULT_MODEL)
        if request.config is not None:
            return request.config, request.weights
        if model not in WEIGHTS:
            raise WorkerError(
                "bad_option", f"unknown SAN model {model!r} (have {', '.join(WEIGHTS)})", "model"
            )
        entry = WEIGHTS[model]
        if request.weights is not None:
            return entry.config, request.weights
        try:
            return entry.config, str(fetch(entry))
        except WeightsError as exc:
            raise WorkerError("bad_checkpoint", str(exc), entry.url) from None

    def load(self, request: LoadRequest) -> dict[str, Any]:
        from ovss_san.build import load_san

        unknown = sorted(set(request.options) - set(OPTIONS))
        if unknown:
            raise WorkerError("bad_option", f"unknown SAN option {unknown[0]!r}", unknown[0])
        overrides = request.options.get("overrides", [])
        if not isinstance(overrides, list) or len(overrides) % 2:
            raise WorkerError(
                "bad_option", "overrides must be a list of KEY VALUE pairs", "overrides"
            )
        self.expansion = request.options.get("expansion", "none")
        if self.expansion not in EXPANSIONS:
            raise WorkerError(
                "bad_option", f"expansion must be one of {', '.join(EXPANSIONS)}", "expansion"
            )
        if self.expansion != "none" and request.pipeline != "demo":
            raise WorkerError(
                "bad_option", "expansion applies to the demo pipeline only", "expansion"
            )
        device = request.device or default_device()
        dtype = resolve_dtype(request.dtype, device)
        runtime = configure(request.threads)
        config, weights = self._resolve(request)
        if not Path(config).is_file():
            raise WorkerError("bad_config", f"{config}: no such config file", config)
        try:
            model, cfg = load_san(config, weights, "cpu", [str(item) for item in overrides])
        except CheckpointError as exc:
            raise WorkerError("bad_checkpoint", str(exc), weights) from None
        except (ClipArchitectureError, KeyError, ValueError, TypeError, yaml.YAMLError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WorkerError("bad_config", f"{config}: {message}", config) from None
        model = move(model, device, dtype)
        self.predictor = SanPredictor(model, cfg)
        self.pipeline = request.pipeline
        coco = method_names("coco-stuff-171", "san")
        self.expansion_pool = {"COCO-all": coco, "COCO-stuff": coco[COCO_THINGS:]}
        return {
            "package_version": version("ovss-san"),
            "config": str(config),
            "config_sha256": sha256_text(cfg.dump()),
            "weights": weights,
            "weights_sha256": sha256_file(weights) if weights else None,
            "random_weights": weights is None,
            "clip_model": cfg.MODEL.SAN.CLIP_MODEL_NAME,
            "device": device,
            "dtype": request.dtype,
            **runtime,
            "pipeline": request.pipeline,
            "expansion": self.expansion,
        }

    def segment(self, image: DecodedImage, request: SegmentRequest) -> Segmentation:
        extra = []
        if self.expansion != "none":
            extra = expansion_names(
                request.vocabulary,
                self.expansion,
                self.expansion_pool["COCO-all"],
                self.expansion_pool["COCO-stuff"],
            )
        h, w = image.rgb.shape[:2]
        channels = len(request.vocabulary) + (1 if extra else 0)
        if request.save_scores and channels * h * w * 4 > MAX_SCORE_BYTES:
            raise WorkerError(
                "bad_option",
                f"scores for {channels} classes at {h}x{w} would take "
                f"{channels * h * w * 4 / 2**30:.1f} GiB; segment without saving scores",
                "save_scores",
            )
        prediction = self.predictor.predict(
            image.rgb,
            request.vocabulary,
            pipeline=self.pipeline,
            extra_names=extra,
            keep_scores=request.save_scores,
        )
        outputs = prediction.outputs
        details: dict[str, Any] = {
            "resized_hw": list(outputs.images.image_sizes[0]),
            "clip_grid": list(outputs.clip_features.grid),
        }
        if extra:
            details["expansion_classes"] = len(extra)
        details.update(peak_device_memory(str(self.predictor.model.device)))
        return Segmentation(
            label_map=prediction.label_map,
            vocabulary=prediction.vocabulary,
            scores=prediction.scores.numpy() if prediction.scores is not None else None,
            timings=prediction.timings,
            extra=details,
        )


def main() -> None:
    run(San())


if __name__ == "__main__":
    main()
