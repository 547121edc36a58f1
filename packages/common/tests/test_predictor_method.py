"""The shared load of config-built methods, the score-size guard, stage timings and the
MaskFormer config keys (torch-free: the torch runtime steps are replaced by stand-ins)."""

from __future__ import annotations

import pytest

from ovss_common import predictor_method
from ovss_common.mask_former_keys import add_mask_former_data_keys, add_wandb_keys
from ovss_common.models import ModelEntry, ModelRegistry
from ovss_common.predictor_method import (
    MAX_SCORE_BYTES,
    PredictorMethod,
    Stopwatch,
    refuse_large_scores,
)
from ovss_common.protocol import InspectRequest, LoadRequest, WorkerError


class Node:
    """A stand-in for detectron2's ``CfgNode``: attributes, created on demand."""

    def __getattr__(self, name: str) -> Node:
        if name.startswith("__"):
            raise AttributeError(name)
        child = Node()
        setattr(self, name, child)
        return child

    def dump(self) -> str:
        return repr(sorted(vars(self)))


class Toy(PredictorMethod):
    name = "toy"
    distribution = "ovss-common"
    label = "Toy"
    options = ("model", "overrides", "random_weights", "size")

    def __init__(self, registry: ModelRegistry) -> None:
        self.models = registry
        self.built: list[tuple] = []

    def option_overrides(self, request: LoadRequest) -> list[str]:
        size = request.options.get("size")
        if size is None:
            return []
        if not isinstance(size, int):
            raise WorkerError("bad_option", "size must be a whole number", "size")
        return ["SIZE", str(size)]

    def build(self, config, weights, overrides):
        if "broken" in config:
            raise KeyError("NO_SUCH_KEY")
        self.built.append((config, weights, overrides))
        cfg = Node()
        cfg.NAME = "toy"
        return "model", cfg

    def make_predictor(self, model, cfg):
        return ("predictor", model)

    def describe(self, cfg):
        return {"cfg_name": cfg.NAME}

    def inspect_loaded(self, image, vocabulary):
        return {"vocabulary": vocabulary, "pipeline": self.pipeline}

    def segment(self, image, request):
        raise NotImplementedError


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setattr(predictor_method, "default_device", lambda: "cpu")
    monkeypatch.setattr(predictor_method, "resolve_dtype", lambda name, device: name)
    monkeypatch.setattr(predictor_method, "configure", lambda threads: {"threads": threads or 1})
    monkeypatch.setattr(predictor_method, "move", lambda model, device, dtype: model)
    config = tmp_path / "toy.yaml"
    config.write_text("NAME: toy\n")
    demo = tmp_path / "toy_demo.yaml"
    demo.write_text("NAME: demo\n")
    registry = ModelRegistry(
        method="toy",
        default="small",
        models={"small": ModelEntry(name="small", config=config, demo_config=demo)},
    )
    return Toy(registry)


def test_load_builds_the_default_model_and_reports_it(toy, tmp_path):
    facts = toy.load(LoadRequest(threads=2, options={"size": 3, "overrides": ["A", 1]}))
    config, weights, overrides = toy.built[-1]
    assert config == str(tmp_path / "toy.yaml") and weights is None
    assert overrides == ["A", "1", "SIZE", "3"]
    assert facts["config"] == config and facts["weights"] is None
    assert facts["random_weights"] is True
    assert (facts["cfg_name"], facts["device"], facts["threads"]) == ("toy", "cpu", 2)
    assert toy.predictor == ("predictor", "model") and toy.pipeline == "eval"


def test_demo_pipeline_takes_the_demo_config(toy, tmp_path):
    toy.load(LoadRequest(pipeline="demo"))
    assert toy.built[-1][0] == str(tmp_path / "toy_demo.yaml")


def test_weights_and_config_paths_pass_through(toy, tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    config = str(tmp_path / "toy.yaml")
    facts = toy.load(LoadRequest(config=config, weights=str(weights)))
    assert toy.built[-1][:2] == (config, str(weights))
    assert facts["weights_sha256"] and facts["random_weights"] is False


@pytest.mark.parametrize(
    ("request_", "kind", "field"),
    [
        (LoadRequest(options={"colour": "blue"}), "bad_option", "colour"),
        (LoadRequest(options={"size": "big"}), "bad_option", "size"),
        (LoadRequest(options={"model": "huge"}), "bad_option", "model"),
        (LoadRequest(config="/no/such.yaml"), "bad_config", "/no/such.yaml"),
    ],
    ids=["unknown-option", "method-option", "unknown-model", "missing-config"],
)
def test_bad_loads_are_structured_errors(toy, request_, kind, field):
    with pytest.raises(WorkerError) as info:
        toy.load(request_)
    assert (info.value.type, info.value.input) == (kind, field)


def test_build_errors_become_bad_config(toy, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("X: 1\n")
    with pytest.raises(WorkerError) as info:
        toy.load(LoadRequest(config=str(broken)))
    assert info.value.type == "bad_config" and "NO_SUCH_KEY" in info.value.message


def test_inspect_checks_its_options(toy):
    toy.load(LoadRequest())
    request = InspectRequest(image="x.png", vocabulary=["cat"])
    assert toy.inspect(None, request) == {"vocabulary": ["cat"], "pipeline": "eval"}
    bad = InspectRequest(image="x.png", vocabulary=["cat"], options={"deep": True})
    with pytest.raises(WorkerError) as info:
        toy.inspect(None, bad)
    assert "Toy inspect" in info.value.message


def test_large_score_arrays_are_refused():
    side = 1024
    fits = MAX_SCORE_BYTES // (4 * side * side)
    refuse_large_scores(fits, side, side, "save_scores", "save fewer")
    with pytest.raises(WorkerError) as info:
        refuse_large_scores(fits + 1, side, side, "save_scores", "save fewer")
    assert info.value.input == "save_scores" and info.value.message.endswith("save fewer")


def test_stopwatch_times_consecutive_stages(monkeypatch):
    ticks = iter([10.0, 10.5, 12.0, 12.25])
    monkeypatch.setattr(predictor_method.time, "perf_counter", lambda: next(ticks))
    clock = Stopwatch()
    for stage in ("preprocess", "model", "postprocess"):
        clock.lap(stage)
    assert clock.timings == {"preprocess": 0.5, "model": 1.5, "postprocess": 0.25}


def test_mask_former_keys_are_declared_on_the_node_given():
    cfg = Node()
    add_mask_former_data_keys(cfg)
    add_wandb_keys(cfg, "project")
    assert cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_semantic"
    assert cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA == 1.0
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.TEST_IMS_PER_BATCH) == ("ADAMW", 1)
    assert isinstance(cfg.WANDB, Node)
    assert (cfg.WANDB.PROJECT, cfg.WANDB.NAME) == ("project", None)
