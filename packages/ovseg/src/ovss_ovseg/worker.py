"""The OVSeg worker: ``python -m ovss_ovseg.worker`` serves the OVSS protocol on stdin/stdout.

Load options (``--option KEY=VALUE`` on the ovss command line):

- ``model``: a released model (``ovseg_swinbase_vitL14_ft_mpt``, ``ovseg_R101c_vitB16_ft_mpt``)
  used when no config is given; its weights come from the zoo unless ``weights`` is given;
  with ``--pipeline demo`` the Swin-B model uses the released demo config;
- ``ensemble_weight``: ``MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT`` (the evaluation protocol's
  per-dataset value: 0.7 ADE, 0.6 Pascal Context, 0.45 VOC; ``ovss eval`` sends it);
- ``overrides``: a list of ``KEY VALUE`` config overrides (detectron2 style);
- ``random_weights``: ``true`` builds the architecture with random weights (seeded; the
  config's ``CLIP_MODEL_NAME`` must be an OpenAI CLIP), nothing downloaded; the provenance
  records it.
"""

from __future__ import annotations

from typing import Any

import yaml

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
from ovss_ovseg.predictor import OVSegPredictor
from ovss_ovseg.zoo import DEFAULT_MODEL, DEMO_CONFIGS, WEIGHTS

OPTIONS = ("model", "overrides", "ensemble_weight", "random_weights")
#: Largest ``[C, H, W]`` float32 score array a request may ask to save.
MAX_SCORE_BYTES = 4 << 30


class OVSegMethod(Method):
    name = "ovseg"
    exif_transpose = True

    def load(self, request: LoadRequest) -> dict[str, Any]:
        from ovss_ovseg.build import load_ovseg

        check_options(request.options, OPTIONS, "OVSeg")
        overrides = config_overrides(request.options)
        weight = request.options.get("ensemble_weight")
        if weight is not None:
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not 0 <= weight <= 1
            ):
                raise WorkerError(
                    "bad_option", "ensemble_weight must be a number in [0, 1]", "ensemble_weight"
                )
            overrides += ["MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT", str(float(weight))]
        device = request.device or default_device()
        dtype = resolve_dtype(request.dtype, device)
        runtime = configure(request.threads)
        config, weights = request.config, request.weights
        random_weights = use_random_weights(request.options, weights)
        if config is None:
            entry = released_entry(request.options, WEIGHTS, DEFAULT_MODEL)
            demo = request.pipeline == "demo"
            config = DEMO_CONFIGS.get(entry.name, entry.config) if demo else entry.config
            if weights is None and not random_weights:
                weights = released_weights(entry)
        with build_errors(config, weights, (yaml.YAMLError,)):
            model, cfg = load_ovseg(config, weights, "cpu", overrides)
        self.predictor = OVSegPredictor(move(model, device, dtype), cfg)
        self.pipeline = request.pipeline
        self.device = device
        adapter = cfg.MODEL.CLIP_ADAPTER
        return {
            **model_provenance("ovss-ovseg", request, config, cfg.dump(), weights),
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "ensemble_weight": adapter.CLIP_ENSEMBLE_WEIGHT,
            "mask_threshold": adapter.MASK_THR,
            "device": device,
            **runtime,
        }

    def segment(self, image: DecodedImage, request: SegmentRequest) -> Segmentation:
        h, w = image.rgb.shape[:2]
        channels = len(request.vocabulary) + 1
        if channels * h * w * 4 > MAX_SCORE_BYTES:
            raise WorkerError(
                "bad_option",
                f"{channels - 1} classes at {h}x{w} need {channels * h * w * 4 / 2**30:.1f} GiB "
                "of scores; use fewer classes or a smaller image",
                "vocabulary",
            )
        try:
            prediction = self.predictor.predict(image.rgb, request.vocabulary, self.pipeline)
        except RuntimeError as exc:
            if "too long for context length" not in str(exc):
                raise
            raise WorkerError("bad_vocabulary", str(exc).splitlines()[0], "vocabulary") from None
        regions = prediction.classification.regions
        details: dict[str, Any] = {
            "resized_hw": list(prediction.proposals.images.image_sizes[0]),
            "proposals": int(prediction.proposals.mask_preds.shape[1]),
            "regions_to_clip": int(regions.valid.sum()) if regions is not None else 0,
        }
        details.update(peak_device_memory(self.device))
        return Segmentation(
            label_map=prediction.label_map,
            vocabulary=prediction.vocabulary,
            scores=prediction.scores.numpy() if request.save_scores else None,
            timings=prediction.timings,
            extra=details,
        )

    def inspect(self, image: DecodedImage, request: InspectRequest) -> dict[str, Any]:
        from ovss_ovseg.inspection import inspect_ovseg

        check_options(request.options, (), "OVSeg inspect")
        return inspect_ovseg(self.predictor, image.rgb, request.vocabulary, self.pipeline)


def main() -> None:
    run(OVSegMethod())


if __name__ == "__main__":
    main()
