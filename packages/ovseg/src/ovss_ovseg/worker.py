"""The OVSeg worker: ``python -m ovss_ovseg.worker`` serves the OVSS protocol on stdin/stdout.

Load options (``--option KEY=VALUE`` on the ovss command line):

- ``model``: a released model of ``ovss_ovseg.models.MODELS`` (``ovseg_swinbase_vitL14_ft_mpt``,
  the default, or ``ovseg_R101c_vitB16_ft_mpt``) used when no config is given (a ``config`` may
  also name one); its weights come from the zoo unless ``weights`` is given;
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
from ovss_common.predictor_method import PredictorMethod, refuse_large_scores
from ovss_common.protocol import LoadRequest, SegmentRequest, WorkerError
from ovss_common.server import Segmentation, run
from ovss_ovseg.models import MODELS
from ovss_ovseg.predictor import OVSegPredictor


class OVSegMethod(PredictorMethod):
    name = "ovseg"
    exif_transpose = True
    models = MODELS
    distribution = "ovss-ovseg"
    label = "OVSeg"
    options = ("model", "overrides", "ensemble_weight", "random_weights")
    config_errors = (yaml.YAMLError,)

    def option_overrides(self, request: LoadRequest) -> list[str]:
        weight = request.options.get("ensemble_weight")
        if weight is None:
            return []
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise WorkerError(
                "bad_option", "ensemble_weight must be a number in [0, 1]", "ensemble_weight"
            )
        return ["MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT", str(float(weight))]

    def build(self, config: str, weights: str | None, overrides: list[str]) -> tuple[Any, Any]:
        from ovss_ovseg.build import load_ovseg

        return load_ovseg(config, weights, "cpu", overrides)

    def make_predictor(self, model: Any, cfg: Any) -> OVSegPredictor:
        return OVSegPredictor(model, cfg)

    def describe(self, cfg: Any) -> dict[str, Any]:
        adapter = cfg.MODEL.CLIP_ADAPTER
        return {
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "ensemble_weight": adapter.CLIP_ENSEMBLE_WEIGHT,
            "mask_threshold": adapter.MASK_THR,
        }

    def segment(self, image: DecodedImage, request: SegmentRequest) -> Segmentation:
        h, w = image.rgb.shape[:2]
        refuse_large_scores(
            len(request.vocabulary) + 1, h, w, "vocabulary", "use fewer classes or a smaller image"
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
        scores = prediction.scores if request.save_scores else None
        return self.segmentation(prediction, scores, details)

    def inspect_loaded(self, image: DecodedImage, vocabulary: list[str]) -> dict[str, Any]:
        from ovss_ovseg.inspection import inspect_ovseg

        return inspect_ovseg(self.predictor, image.rgb, vocabulary, self.pipeline)


def main() -> None:
    run(OVSegMethod())


if __name__ == "__main__":
    main()
