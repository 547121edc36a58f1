"""The one resolver of a ``load`` request over a method's model registry."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from ovss_common.models import ModelEntry, ModelRegistry, main, resolve_model
from ovss_common.protocol import LoadRequest, WorkerError
from ovss_common.zoo import WeightsEntry


def _entry(name: str, tmp: Path, files: tuple[str, ...] = ("w.pth",)) -> ModelEntry:
    return ModelEntry(
        name=name,
        config=tmp / f"{name}.yaml",
        weights=tuple(
            WeightsEntry(name=f"{name}-{f}", method="m", filename=f, url=f"https://x/{f}")
            for f in files
        ),
        demo_config=tmp / f"{name}_demo.yaml" if name == "big" else None,
    )


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    models = {n: _entry(n, tmp_path) for n in ("small", "big")}
    models["pair"] = _entry("pair", tmp_path, ("a.pth", "b.pth"))
    return ModelRegistry(method="m", models=models, default="small")


def _place(entry: ModelEntry) -> None:
    for weights in entry.weights:
        weights.path.parent.mkdir(parents=True, exist_ok=True)
        weights.path.write_bytes(weights.filename.encode())


def test_the_default_model_and_its_cached_weights(registry, tmp_path):
    _place(registry.entry())
    resolved = resolve_model(LoadRequest(), registry)
    assert resolved.config == str(tmp_path / "small.yaml")
    assert resolved.weights == str(registry.entry().weights[0].path)
    assert resolved.model is registry.models["small"] and not resolved.random_weights


def test_the_model_option_the_demo_config_and_a_folder_of_several_files(registry, tmp_path):
    _place(registry.models["big"])
    demo = resolve_model(LoadRequest(pipeline="demo", options={"model": "big"}), registry)
    assert demo.config == str(tmp_path / "big_demo.yaml")
    small = resolve_model(LoadRequest(pipeline="demo", options={"model": "small"}), registry)
    assert small.config == str(tmp_path / "small.yaml")
    _place(registry.models["pair"])
    pair = resolve_model(LoadRequest(options={"model": "pair"}), registry)
    assert pair.weights == str(registry.models["pair"].weights[0].path.parent)


def test_a_config_path_or_name_and_given_weights(registry, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("{}")
    resolved = resolve_model(LoadRequest(config=str(config), weights="/w.pth"), registry)
    assert (resolved.config, resolved.weights, resolved.model) == (str(config), "/w.pth", None)
    by_name = resolve_model(LoadRequest(config="big", weights="/w.pth"), registry)
    assert by_name.config == str(tmp_path / "big.yaml") and by_name.weights == "/w.pth"


def test_one_line_errors(registry, tmp_path, monkeypatch):
    config = tmp_path / "mine.yaml"
    config.write_text("{}")
    cases = [
        (LoadRequest(options={"model": "huge"}), "bad_option", "unknown m model 'huge'"),
        (LoadRequest(config=str(config), options={"model": "big"}), "bad_option", "not both"),
        (LoadRequest(weights="/w", options={"random_weights": True}), "bad_option", "exclude"),
    ]
    for request, kind, message in cases:
        with pytest.raises(WorkerError, match=message) as caught:
            resolve_model(request, registry)
        assert caught.value.type == kind
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    with pytest.raises(WorkerError, match="OVSS_OFFLINE is set") as caught:
        resolve_model(LoadRequest(), registry)
    assert caught.value.type == "bad_checkpoint"
    with pytest.raises(ValueError, match="default model"):
        ModelRegistry(method="m", models={}, default="small")


def test_digest_status_names_what_the_publisher_states():
    base = {"name": "n", "method": "m", "filename": "f", "url": "u"}
    assert WeightsEntry(**base, sha256="0" * 64).digest_status.startswith("sha256 pinned")
    assert WeightsEntry(**base, md5_prefix="abc").digest_status.startswith("md5 prefix pinned")
    assert WeightsEntry(**base).digest_status.startswith("trust on first use")


def test_the_zoo_listing_shows_every_file_once_with_its_check(registry):
    optional = WeightsEntry(name="extra", method="m", filename="x.pth", url="https://y/x.pth")
    listed = ModelRegistry(
        method="m", models=registry.models, default="small", optional=(optional,)
    ).listing()
    assert [row["name"] for row in listed] == [
        "small-w.pth",
        "big-w.pth",
        "pair-a.pth",
        "pair-b.pth",
        "extra",
    ]
    assert listed[0]["models"] == ["small"] and listed[-1]["models"] == []
    assert not any(row["cached"] for row in listed)
    assert listed[-1]["digest"].startswith("trust on first use")


def test_main_lists_the_files_or_the_model_names(registry, monkeypatch, capsys):
    module = types.ModuleType("registry_under_test")
    module.MODELS = registry
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert main([module.__name__, "--names"]) == 0
    names = json.loads(capsys.readouterr().out)
    assert names == {"default": "small", "models": ["small", "big", "pair"]}
    assert main([module.__name__]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["name"] for row in rows] == ["small-w.pth", "big-w.pth", "pair-a.pth", "pair-b.pth"]
    assert main([module.__name__, "--other"]) == 2
