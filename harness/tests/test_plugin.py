"""A fourth method joins OVSS as one more package outside the repository, with no harness change:
discovery finds it through ``OVSS_METHOD_DIRS``, and every command runs it with the facts its
package declares (tiny fixture, label space, dataset options, published targets)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import REPO, TOY_PROJECT
from PIL import Image

from ovss.cli import main
from ovss.datasets.mini_voc import STEMS
from ovss.environments import discover_methods, ensure_environment, read_method_package

FACTS = """
[tool.ovss.method]
name = "fourth"
worker = "ovss_toy.worker"
targets = "published.toml"

[tool.ovss.method.tiny]
eval = ["tiny/config.json", "tiny/weights.json"]

[tool.ovss.method.label-spaces]
mini-voc = "voc-20"

[tool.ovss.method.dataset-options]
mini-voc = { unassigned_below = 30 }
"""

TARGETS = """
[[target]]
setting = "Fourth"
model = "bright"
benchmark = "VOC-20"
dataset = "mini-voc"
published = 12.5
source = "its paper"
definition = "mmseg"

[[target]]
setting = "Fourth"
model = "bright"
benchmark = "COCO-Object"
published = 3.0
source = "its paper"
definition = "mmseg"
"""


@pytest.fixture(scope="module")
def fourth(tmp_path_factory):
    """The toy method re-declared as a package named ``fourth`` outside the repository (common
    linked at the same relative depth, so its lock still holds), with its environment built."""
    root = tmp_path_factory.mktemp("plugins")
    (root / "packages").mkdir()
    (root / "packages" / "common").symlink_to(REPO / "packages" / "common")
    project = root / "a" / "b" / "fourth"
    shutil.copytree(TOY_PROJECT, project, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    start = text.index("[tool.ovss.method]")
    end = text.index("[tool.uv.sources]")
    pyproject.write_text(text[:start] + FACTS.lstrip() + "\n" + text[end:])
    (project / "published.toml").write_text(TARGETS)
    (project / "tiny").mkdir()
    (project / "tiny" / "config.json").write_text("{}")
    (project / "tiny" / "weights.json").write_text('{"untrained": true}')
    package = read_method_package(project)
    ensure_environment(package)
    return project


@pytest.fixture
def only_fourth(fourth, monkeypatch):
    monkeypatch.setenv("OVSS_METHOD_DIRS", str(fourth))
    return fourth


def _picture(path):
    Image.fromarray(np.linspace(0, 255, 48 * 64, dtype=np.uint8).reshape(48, 64)).convert(
        "RGB"
    ).save(path)
    return path


def test_discovery_reads_every_fact_of_the_package(only_fourth):
    package = discover_methods()["fourth"]
    assert package.project == only_fourth.resolve()
    assert package.tiny == {"eval": ("tiny/config.json", "tiny/weights.json")}
    assert package.label_spaces == {"mini-voc": "voc-20"}
    assert package.dataset_options == {"mini-voc": {"unassigned_below": 30}}
    assert package.targets_file == "published.toml"


def test_segment_eval_and_compare_use_the_declared_facts(only_fourth, tmp_path, capsys):
    image = _picture(tmp_path / "ramp.png")
    out = tmp_path / "segment"
    argv = ["segment", "--method", "fourth", "--tiny", "--image", str(image)]
    assert main([*argv, "--classes", "dark", "light", "--out", str(out)]) == 0
    sidecar = json.loads((out / "ramp.json").read_text())
    assert sidecar["harness"]["untrained_weights"] is True
    assert (out / "overlays" / "ramp.png").is_file()

    evaluated = tmp_path / "eval"
    argv = [
        "eval",
        "--method",
        "fourth",
        "--tiny",
        "--dataset",
        "mini-voc",
        "--out",
        str(evaluated),
    ]
    assert main(argv) == 0
    run = json.loads((evaluated / "run.json").read_text())
    assert run["cache_key"]["label_space"] == "voc-20"
    assert run["cache_key"]["options"] == {"unassigned_below": 30}
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["num_images"] == len(STEMS) and metrics["num_classes"] == 20

    compared = tmp_path / "compare"
    argv = ["compare", "--dataset", "mini-voc", "--methods", "fourth", "--tiny"]
    assert main([*argv, "--out", str(compared)]) == 0
    assert "| FOURTH | voc-20 | 4 |" in (compared / "report.md").read_text()
    assert "fourth" in capsys.readouterr().out


def test_demo_draws_its_panel(only_fourth, tmp_path):
    image = _picture(tmp_path / "ramp.png")
    out = tmp_path / "demo"
    argv = ["demo", "--methods", "fourth", "--tiny", "--image", str(image)]
    assert main([*argv, "--classes", "dark", "light", "--out", str(out)]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert "fourth" in summary["methods"] and (out / "ramp.png").is_file()


def test_sweep_and_reproduce_run_it_with_its_own_targets(only_fourth, tmp_path, capsys):
    swept = tmp_path / "sweep"
    argv = ["sweep", "--methods", "fourth", "--tiny", "--datasets", "mini-voc", "--workers", "1"]
    assert main([*argv, "--no-dashboard", "--out", str(swept)]) == 0
    assert "| fourth | tiny | mini-voc | voc-20 |" in capsys.readouterr().out

    doc = tmp_path / "reproduce.md"
    doc.write_text("# Reproduction\n")
    argv = ["reproduce", "--method", "fourth", "--docs", str(doc)]
    assert main([*argv, "--out", str(tmp_path / "repro")]) == 0
    text = doc.read_text()
    assert "| Fourth | VOC-20 | mini-voc | mmseg | 12.5 | its paper |" in text
    assert "| Fourth | COCO-Object | – | mmseg | 3.0 | its paper | – | not run:" in text
    rows = json.loads((tmp_path / "repro" / "fourth.json").read_text())["rows"]
    assert rows[0]["status"] == "measured" and rows[0]["measured"] is not None
