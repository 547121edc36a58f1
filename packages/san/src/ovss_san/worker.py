"""The SAN worker: ``python -m ovss_san.worker`` serves the OVSS protocol on stdin/stdout.

Load options (``--option KEY=VALUE`` on the ovss command line):

- ``model``: a released model name (``san_vit_b_16``, ``san_vit_large_14``) used when no
  config is given; its weights come from the zoo unless ``weights`` is given;
- ``overrides``: a list of ``KEY VALUE`` config overrides (detectron2 style);
- ``random_weights``: ``true`` builds the architecture with random weights (seeded), nothing
  downloaded; the provenance records it;
- ``expansion`` (demo pipeline only): ``none`` (default), ``COCO-all`` or ``COCO-stuff``:
  the original demo's vocabulary expansion, reported as one appended ``other`` class.
"""

from __future__ import annotations

from typing import Any

import yaml

from ovss_common.class_lists import method_names
from ovss_common.images import DecodedImage
from ovss_common.loading import (
    build_errors,
    check_options,
    config_overrides,
    model_provenance,
    released_entry,
    released_weights,
    use_random_weights,
)
from ovss_common.protocol import InspectRequest, LoadRequest, SegmentRequest, WorkerError
from ovss_common.server import Method, Segmentation, run
from ovss_common.torch_runtime import (
    configure,
    default_device,
    move,
    peak_device_memory,
    resolve_dtype,
)
from ovss_san.predictor import SanPredictor, expansion_names
from ovss_san.zoo import DEFAULT_MODEL, WEIGHTS

EXPANSIONS = ("none", "COCO-all", "COCO-stuff")
#: Largest ``[C, H, W]`` float32 score array a request may ask to save.
MAX_SCORE_BYTES = 4 << 30
#: COCO-Stuff 171: the first 80 ids are things, the remaining 91 stuff.
COCO_THINGS = 80
OPTIONS = ("model", "overrides", "expansion", "random_weights")


class San(Method):
    name = "san"
    exif_transpose = True

    def load(self, request: LoadRequest) -> dict[str, Any]:
        from ovss_san.build import load_san

        check_options(request.options, OPTIONS, "SAN")
        overrides = config_overrides(request.options)
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
        config, weights = request.config, request.weights
        random_weights = use_random_weights(request.options, weights)
        if config is None:
            entry = released_entry(request.options, WEIGHTS, DEFAULT_MODEL)
            config = entry.config
            if weights is None and not random_weights:
                weights = released_weights(entry)
        with build_errors(config, weights, (yaml.YAMLError,)):
            model, cfg = load_san(config, weights, "cpu", overrides)
        self.predictor = SanPredictor(move(model, device, dtype), cfg)
        self.pipeline = request.pipeline
        self.device = device
        coco = method_names("coco-stuff-171", "san")
        self.expansion_pool = {"COCO-all": coco, "COCO-stuff": coco[COCO_THINGS:]}
        return {
            **model_provenance("ovss-san", request, config, cfg.dump(), weights),
            "clip_model": cfg.MODEL.SAN.CLIP_MODEL_NAME,
            "device": device,
            "expansion": self.expansion,
            **runtime,
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
        details.update(peak_device_memory(self.device))
        return Segmentation(
            label_map=prediction.label_map,
            vocabulary=prediction.vocabulary,
            scores=prediction.scores.numpy() if prediction.scores is not None else None,
            timings=prediction.timings,
            extra=details,
        )

    def inspect(self, image: DecodedImage, request: InspectRequest) -> dict[str, Any]:
        from ovss_san.inspection import inspect_san

        check_options(request.options, (), "SAN inspect")
        return inspect_san(self.predictor, image.rgb, request.vocabulary, self.pipeline)


def main() -> None:
    run(San())


if __name__ == "__main__":
    main()
