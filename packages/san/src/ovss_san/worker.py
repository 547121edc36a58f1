"""The SAN worker: ``python -m ovss_san.worker`` serves the OVSS protocol on stdin/stdout.

Load options (``--option KEY=VALUE`` on the ovss command line):

- ``model``: a released model of ``ovss_san.models.MODELS`` (``san_vit_b_16``, the default,
  or ``san_vit_large_14``) used when no config is given (a ``config`` may also name one); its
  weights come from the zoo unless ``weights`` is given;
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
from ovss_common.predictor_method import PredictorMethod, refuse_large_scores
from ovss_common.protocol import LoadRequest, SegmentRequest, WorkerError
from ovss_common.server import Segmentation, run
from ovss_san.models import MODELS
from ovss_san.predictor import SanPredictor, expansion_names

EXPANSIONS = ("none", "COCO-all", "COCO-stuff")
#: COCO-Stuff 171: the first 80 ids are things, the remaining 91 stuff.
COCO_THINGS = 80


class San(PredictorMethod):
    name = "san"
    exif_transpose = True
    models = MODELS
    distribution = "ovss-san"
    label = "SAN"
    options = ("model", "overrides", "expansion", "random_weights")
    config_errors = (yaml.YAMLError,)

    def option_overrides(self, request: LoadRequest) -> list[str]:
        self.expansion = request.options.get("expansion", "none")
        if self.expansion not in EXPANSIONS:
            raise WorkerError(
                "bad_option", f"expansion must be one of {', '.join(EXPANSIONS)}", "expansion"
            )
        if self.expansion != "none" and request.pipeline != "demo":
            raise WorkerError(
                "bad_option", "expansion applies to the demo pipeline only", "expansion"
            )
        coco = method_names("coco-stuff-171", "san")
        self.expansion_pool = {"COCO-all": coco, "COCO-stuff": coco[COCO_THINGS:]}
        return []

    def build(self, config: str, weights: str | None, overrides: list[str]) -> tuple[Any, Any]:
        from ovss_san.build import load_san

        return load_san(config, weights, "cpu", overrides)

    def make_predictor(self, model: Any, cfg: Any) -> SanPredictor:
        return SanPredictor(model, cfg)

    def describe(self, cfg: Any) -> dict[str, Any]:
        return {"clip_model": cfg.MODEL.SAN.CLIP_MODEL_NAME, "expansion": self.expansion}

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
        if request.save_scores:
            channels = len(request.vocabulary) + (1 if extra else 0)
            refuse_large_scores(channels, h, w, "save_scores", "segment without saving scores")
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
        return self.segmentation(prediction, prediction.scores, details)

    def inspect_loaded(self, image: DecodedImage, vocabulary: list[str]) -> dict[str, Any]:
        from ovss_san.inspection import inspect_san

        return inspect_san(self.predictor, image.rgb, vocabulary, self.pipeline)


def main() -> None:
    run(San())


if __name__ == "__main__":
    main()
