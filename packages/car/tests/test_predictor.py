"""``CarPredictor`` is the one image pipeline: the bench and ``inspect`` run it as the worker
does, stuff pass included."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GOLDEN
from PIL import Image

from ovss_car import bench
from ovss_car.config import load_config
from ovss_car.inspection import inspect_car
from ovss_car.predictor import CarPredictor, voc_names
from ovss_common.protocol import NO_CLASS


@pytest.fixture(scope="module")
def coffee(golden_case, tiny_clips):
    from ovss_car.car import CaR

    case = golden_case("ade_coffee")
    config = load_config(GOLDEN / "configs" / "ade_coffee.yaml")
    return case, CarPredictor(CaR(*tiny_clips), config)


def _expected_labels(case) -> np.ndarray:
    ids = case["thing_id_mapping"].tolist() + case["stuff_id_mapping"].tolist()
    expected = np.full(case["label_map"].shape, NO_CLASS, np.int64)
    for position, dataset_id in enumerate(ids):
        expected[case["label_map"] == dataset_id + 1] = position
    return expected


def test_predict_runs_the_stuff_pass_first(coffee):
    case, predictor = coffee
    things, stuff = case.json("vocabulary"), case.json("stuff_vocabulary")
    prediction = predictor.predict(case["image"], things + stuff, stuff, keep_scores=True)
    assert prediction.pass_names == ["stuff", "things"]
    assert prediction.details["stuff_steps"] == case.steps("stuff_")
    assert prediction.details["steps"] == case.steps()
    assert prediction.vocabulary == things + stuff
    assert (prediction.label_map == _expected_labels(case)).mean() >= 0.995
    assert prediction.scores.shape == (len(things + stuff), *case["image"].shape[:2])


def test_voc_names_only_swap_plain_voc_names():
    assert voc_names(["bird", "cat", "coffee cup"])[0] == "bird avian"
    assert voc_names(["bird", "cat", "coffee cup"])[2] == "coffee cup"


def test_bench_runs_both_passes_of_a_config_with_stuff(golden_case, tmp_path):
    case = golden_case("ade_coffee")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(case["image"]).save(folder / "coffee.png")
    out = tmp_path / "bench.json"
    things, stuff = case.json("vocabulary"), case.json("stuff_vocabulary")
    argv = [
        "--folder",
        str(folder),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--config",
        str(GOLDEN / "configs" / "ade_coffee.yaml"),
        "--weights",
        str(GOLDEN),
        "--classes",
        *things,
        *stuff,
    ]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["stuff"] == stuff and result["vocabulary"] == things + stuff
    passes = result["per_image"]["coffee.png"]["passes"]
    assert passes["stuff"]["steps"] == case.steps("stuff_")
    assert passes["things"]["steps"] == case.steps()
    assert passes["stuff"]["classes"] == len(stuff) and passes["things"]["classes"] == len(things)


def test_bench_defaults_to_the_voc_names_without_stuff():
    config = load_config("voc")
    names, stuff = bench.vocabulary(config, None, None)
    assert len(names) == 20 and "bird avian" in names and stuff == []
    names, stuff = bench.vocabulary(config, None, ["sky"])
    assert names[-1] == "sky" and stuff == ["sky"]
    names, stuff = bench.vocabulary(load_config("ade_150"), None, None)
    assert len(names) == 150 and len(stuff) == 25 and "wall" in stuff
    assert bench.vocabulary(load_config("ade_150"), None, [])[1] == []


def test_inspect_measures_the_stuff_pass(coffee):
    case, predictor = coffee
    things, stuff = case.json("vocabulary")[:2], case.json("stuff_vocabulary")[:2]
    result = inspect_car(predictor, case["image"], things + stuff, stuff)
    calls = {stage["stage"]: stage["calls"] for stage in result["stages"]}
    assert calls["DenseCRF"] == 2
    shapes = {row["tensor"]: row["shape"] for row in result["shapes"]}
    assert shapes["stuff step 1: CAM masks"][0] == len(stuff)
    assert shapes["step 1: CAM masks"][0] == len(things)
    assert shapes["scores"] == [len(things + stuff), *case["image"].shape[:2]]
