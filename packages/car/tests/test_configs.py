"""The shipped CaR configs: same keys and values as the original ``clip_as_rnn/configs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import ovss_car

CONFIGS = Path(ovss_car.__file__).parent / "configs"
GOLDEN_FULL = Path(__file__).resolve().parent / "golden_full"

NAMES = ["voc", "coco", "pascal_context", "pascal_context_459", "ade_150", "ade_847"]
# Datasets whose original configs also set the stuff pass (``stuff_*`` keys).
WITH_STUFF = ["pascal_context", "pascal_context_459", "ade_150", "ade_847"]

# ds_name, n_class, ignore_background of each original config.
TEST_SECTION = {
    "voc": ("voc", 21, False),
    "coco": ("coco", 81, False),
    "pascal_context": ("context", 60, False),
    "pascal_context_459": ("pascal_459", 460, True),
    "ade_150": ("ade", 151, True),
    "ade_847": ("ade_847", 847, True),
}


def load(name: str) -> dict:
    with open(CONFIGS / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def same(a, b) -> bool:
    """Equality that also tells ``1`` from ``1.0`` and ``True``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_all_configs_shipped():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", ["voc", "ade_150"])
def test_matches_resolved_original(name):
    golden = json.loads((GOLDEN_FULL / f"{name}.json").read_text(encoding="utf-8"))["yaml"]
    ours = load(name)
    assert ours == golden
    assert same(ours, golden)


@pytest.mark.parametrize("name", NAMES)
def test_structure(name):
    cfg = load(name)
    assert set(cfg) >= {"clip", "car", "test", "save_path"}
    clip, car, test = cfg["clip"], cfg["car"], cfg["test"]

    assert clip["clip_model_name"] == "ViT-B/16"
    assert clip["semantic_clip_model_name"] == "ViT-L/14"
    assert clip["pretrained_data"] == clip["semantic_pretrained_data"] == "openai"

    for key in ("confidence_threshold", "mask_threshold", "clipes_threshold"):
        assert isinstance(car[key], float)
        assert 0.0 < car[key] < 1.0
    assert isinstance(car["visual_prompt_type"], list)
    assert car["visual_prompt_type"]
    assert set(car["visual_prompt_type"]) <= {"circle", "blur", "gray"}
    templates = car["semantic_templates"]
    assert len(templates) == 15
    assert all(isinstance(t, str) and t.count("{}") == 1 for t in templates)
    assert len(car["bg_cls"]) == 23

    ds_name, n_class, ignore_background = TEST_SECTION[name]
    assert test["ds_name"] == ds_name
    assert test["n_class"] == n_class
    assert test["ignore_background"] is ignore_background
    assert test["algo"] == "car"
    assert test["seg_mode"] == "semantic"


@pytest.mark.parametrize("name", NAMES)
def test_stuff_keys(name):
    car = load(name)["car"]
    if name in WITH_STUFF:
        assert isinstance(car["stuff_visual_prompt_type"], list)
        assert car["stuff_visual_prompt_type"]
        assert car["stuff_bg_factor"] == car["bg_factor"] == 1
    else:
        assert not any(key.startswith("stuff_") for key in car)
        assert "bg_factor" not in car


def test_same_templates_and_background_words_everywhere():
    cars = [load(name)["car"] for name in NAMES]
    assert all(c["semantic_templates"] == cars[0]["semantic_templates"] for c in cars)
    assert all(c["bg_cls"] == cars[0]["bg_cls"] for c in cars)


def test_sam_section_only_in_voc():
    assert "sam" in load("voc")
    assert all("sam" not in load(name) for name in NAMES if name != "voc")


def test_shipped_configs_load_by_name(tmp_path, monkeypatch):
    from ovss_car.config import load_config

    monkeypatch.chdir(tmp_path)
    assert load_config("ade_150").path == CONFIGS / "ade_150.yaml"
    assert load_config(CONFIGS / "voc.yaml").path == CONFIGS / "voc.yaml"
    with pytest.raises(FileNotFoundError, match="shipped configs: ade_150, ade_847, coco"):
        load_config("ade_151")
    with pytest.raises(FileNotFoundError, match=r"ade_150\.yml: no such config file"):
        load_config("ade_150.yml")


def test_the_model_option_names_a_shipped_config(tmp_path, monkeypatch):
    from ovss_car.models import MODELS, resolve
    from ovss_common.protocol import LoadRequest, WorkerError

    monkeypatch.setenv("OVSS_OFFLINE", "1")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    folder = str(tmp_path)

    def config(**request) -> Path:
        return Path(resolve(LoadRequest(weights=folder, **request)).config)

    assert sorted(MODELS.models) == sorted(NAMES) and MODELS.default == "voc"
    assert config(options={"model": "ade_847"}) == CONFIGS / "ade_847.yaml"
    assert config() == CONFIGS / "voc.yaml"
    assert config(config="coco") == CONFIGS / "coco.yaml"
    resolved = resolve(LoadRequest(config="pascal_context", weights=folder))
    assert resolved.model.name == "pascal_context" and resolved.weights == folder
    with pytest.raises(WorkerError, match=r"unknown car model 'ade_151' \(have ade_150, ade_847"):
        resolve(LoadRequest(options={"model": "ade_151"}))
    with pytest.raises(WorkerError, match="not both"):
        resolve(LoadRequest(config="coco", options={"model": "voc"}))


@pytest.mark.parametrize("name", NAMES)
def test_every_shipped_config_is_a_model_with_the_clips_it_names(name):
    from ovss_car.config import load_config
    from ovss_car.models import MODELS
    from ovss_common.openai_clip import OPENAI_CLIPS

    entry = MODELS.entry(name)
    config = load_config(entry.config)
    assert entry.config == CONFIGS / f"{name}.yaml"
    assert entry.weights == (
        OPENAI_CLIPS[config.cam_checkpoint],
        OPENAI_CLIPS[config.semantic_checkpoint],
    )
