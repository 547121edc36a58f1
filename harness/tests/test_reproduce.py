"""``ovss reproduce``: the published targets, runs on prepared datasets, honest rows otherwise."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_methods import car, ovseg, san

from ovss.cli import main
from ovss.datasets import all_datasets, register_dataset
from ovss.datasets.mini_voc import STEMS
from ovss.engine import EvalSettings
from ovss.environments import get_method
from ovss.errors import OvssError
from ovss.metrics import DEFINITIONS
from ovss.reproduce import (
    Target,
    exit_status,
    methods_with_targets,
    read_targets,
    run_reproduction,
    targets_of,
    update_docs,
)
from ovss.runner import run_eval
from ovss.worker import ModelSettings
from ovss_common.protocol import LoadRequest


def _toy_target(dataset: str | None, **extra) -> Target:
    fields = {
        "method": "toy",
        "setting": "Toy",
        "model": "bright",
        "benchmark": "VOC-21",
        "dataset": dataset,
        "published": 50.0,
        "source": "a test",
        "definition": "d2-v0.6",
    }
    return Target(**{**fields, **extra})


def _toy(weights: str | None = None) -> ModelSettings:
    return ModelSettings(method="toy", load=LoadRequest(weights=weights))


def _registered_models(method: str) -> set[str]:
    """The model names ``method``'s own registry resolves, asked in its environment."""
    package = get_method(method)
    module = package.models_module
    listing = subprocess.run(
        [str(package.python), "-c", f"from {module} import MODELS; print(*MODELS.models)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listing.stdout.split())


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("san", marks=san),
        pytest.param("ovseg", marks=ovseg),
        pytest.param("car", marks=car),
    ],
)
def test_every_target_names_a_known_dataset_model_and_definition(method):
    datasets = set(all_datasets())
    models = _registered_models(method)
    targets = targets_of(method)
    for target in targets:
        assert target.dataset is None or target.dataset in datasets, target
        assert target.definition in DEFINITIONS
        assert not target.drop_unassigned or target.definition == "car"
        assert target.model in models, target
    assert len(targets) == {"san": 12, "ovseg": 10, "car": 7}[method]
    assert method in methods_with_targets()


def test_a_targets_file_is_read_and_checked(tmp_path):
    path = tmp_path / "targets.toml"
    path.write_text(
        '[[target]]\nsetting = "T"\nmodel = "m"\nbenchmark = "B"\npublished = 1.5\n'
        'source = "s"\ndefinition = "mmseg"\n'
    )
    (target,) = read_targets("toy", path)
    assert (target.method, target.dataset, target.published, target.decimals) == (
        "toy",
        None,
        1.5,
        1,
    )
    path.write_text(path.read_text() + 'colour = "red"\n')
    with pytest.raises(OvssError, match="unknown key 'colour'"):
        read_targets("toy", path)
    path.write_text(path.read_text().replace('colour = "red"\n', "").replace("mmseg", "nope"))
    with pytest.raises(OvssError, match="unknown definition 'nope'"):
        read_targets("toy", path)
    with pytest.raises(OvssError, match="'toy' declares no published targets"):
        targets_of("toy")


def test_prepared_targets_are_measured_and_the_others_say_why(toy_package, tmp_path):
    targets = [
        _toy_target("mini-voc"),
        _toy_target("mini-voc", definition="car", benchmark="VOC-21 (car)"),
        _toy_target("ade20k-150", benchmark="A-150"),
        _toy_target(None, benchmark="COCO-Object"),
    ]
    rows = run_reproduction(targets, lambda target: _toy(), tmp_path / "repro")

    reference = run_eval(EvalSettings(model=_toy(), dataset="mini-voc", out=tmp_path / "eval"))
    measured, car, ade, coco = rows
    assert measured.status == "measured" and measured.images == measured.dataset_images
    assert measured.measured == reference["mIoU"]
    assert set(measured.by_definition) == set(DEFINITIONS)
    assert measured.folder == str(tmp_path / "repro" / "mini-voc" / "toy@bright")
    assert car.measured == measured.by_definition["car"]
    assert ade.status.startswith("not run: dataset ade20k-150:") and ade.measured is None
    assert "ovss datasets prepare ade20k-150" in ade.detail
    assert coco.status == "not run: the registry has no COCO-Object dataset"

    again = run_reproduction(targets[:1], lambda target: _toy(), tmp_path / "repro")
    run = json.loads((tmp_path / "repro" / "mini-voc" / "toy@bright" / "metrics.json").read_text())
    assert run["num_predicted_now"] == 0 and again[0].measured == measured.measured


def test_a_limited_run_is_partial(toy_package, tmp_path):
    (row,) = run_reproduction(
        [_toy_target("mini-voc")], lambda target: _toy(), tmp_path / "repro", limit=2
    )
    assert row.status == f"partial: first 2 of {row.dataset_images} images"


def test_a_model_that_cannot_load_is_tried_once(toy_package, tmp_path):
    targets = [_toy_target("mini-voc"), _toy_target("mini-voc", model="other")]
    missing = str(tmp_path / "absent.json")
    rows = run_reproduction(targets, lambda target: _toy(missing), tmp_path / "repro")
    assert [row.status for row in rows] == [rows[0].status] * 2
    assert rows[0].status.startswith("not run: load failed (bad_checkpoint)")
    assert "absent.json" in rows[0].status
    assert not (tmp_path / "repro" / "mini-voc" / "toy@other").exists()
    assert exit_status(rows) == 1


def test_failed_images_make_a_partial_row_and_exit_1(toy_package, tmp_path):
    crashing = ModelSettings(method="toy", load=LoadRequest(options={"crash_on": [STEMS[0]]}))
    (row,) = run_reproduction([_toy_target("mini-voc")], lambda t: crashing, tmp_path / "r")
    assert row.status == f"partial: 1 of {len(STEMS)} images failed (see failures.jsonl)"
    assert row.problem and exit_status([row]) == 1
    (again,) = run_reproduction(
        [_toy_target("mini-voc")], lambda target: _toy(), tmp_path / "r", restart=True
    )
    run = json.loads((tmp_path / "r" / "mini-voc" / "toy@bright" / "metrics.json").read_text())
    assert again.status == "measured" and run["num_predicted_now"] == len(STEMS)
    assert exit_status([again]) == 0


def test_car_targets_do_not_count_unassigned_pixels_as_misses(toy_package, datasets_dir, tmp_path):
    root = datasets_dir / "mini-voc"
    names = [f"class {i}" for i in range(21)]
    register_dataset("plain-voc", root / "JPEGImages", root / "SegmentationClass", names)
    target = _toy_target("plain-voc", definition="car", drop_unassigned=True)
    dark = ModelSettings(method="toy", load=LoadRequest(options={"unassigned_below": 100}))
    (row,) = run_reproduction([target], lambda t: dark, tmp_path / "repro")
    stored = json.loads(
        (tmp_path / "repro" / "plain-voc" / "toy@bright" / "metrics.json").read_text()
    )
    assert stored["definition"] == "car" and row.status == "measured"
    assert row.measured > stored["mIoU"]  # the eval counts the unassigned pixels as misses
    assert row.by_definition["car"] == row.measured


DOC = """# doc
<!-- reproduce:san:start -->
| SAN ViT-B/16 | A-150 | ade20k-150 | d2-main | 27.56 (paper 27.5) | log | 27.49 | measured |
| SAN ViT-B/16 | A-847 | ade20k-847 | d2-main | 10.21 (paper 10.1) | log | – | not run: x |
old san
<!-- reproduce:san:end -->
between
<!-- reproduce:car:start -->
old car
<!-- reproduce:car:end -->
"""


def test_cli_fills_only_its_methods_block_and_writes_the_rows(tmp_path, capsys):
    doc = tmp_path / "reproduce.md"
    doc.write_text(DOC)
    out = tmp_path / "repro"
    assert main(["reproduce", "--method", "car", "--docs", str(doc), "--out", str(out)]) == 0
    text = doc.read_text()
    assert "old san" in text and "between" in text and "old car" not in text
    assert text.count("| CaR ViT-B/16 CAM + ViT-L/14 |") == 7
    assert "| VOC-20 | voc-20 | car, unassigned ignored | 91.4 | results aggregator | – |" in text
    assert "no target could be run here" in text
    rows = json.loads((out / "car.json").read_text())["rows"]
    assert [row["measured"] for row in rows] == [None] * 7
    assert all(row["status"].startswith("not run:") for row in rows)
    printed = capsys.readouterr().out
    assert "to prepare: extract VOCtrainval_11-May-2012.tar" in printed

    assert main(["reproduce", "--method", "san", "--docs", str(doc), "--out", str(out)]) == 0
    san = doc.read_text()
    assert "| SAN ViT-L/14 | PC-459 | pc-459 | d2-main | 20.83 (paper 15.7) |" in san
    assert "| SAN ViT-B/16 | VOC-20 | voc-20 | d2-main | 93.95 (paper 94.0) |" in san
    assert "| log | 27.49 | measured |" in san and "not run: x" not in san
    assert "Rows kept from an earlier run (their targets could not run now): 1." in san
    assert san.count("| SAN ViT-") == 12
    before = doc.read_text()
    limited = ["reproduce", "--method", "car", "--limit", "3", "--docs", str(doc)]
    assert main([*limited, "--out", str(out)]) == 0
    assert doc.read_text() == before
    assert "left as is" in capsys.readouterr().out


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    for flags, message in (
        (["--workers", "0"], "--workers must be positive, got 0"),
        (["--shards", "-1"], "--shards must be positive, got -1"),
        (["--workers", "2", "--device", "cuda:1"], "use --device cuda"),
    ):
        assert main(["reproduce", "--method", "san", *flags, "--out", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
    assert main(["reproduce", "--method", "car", "--datasets", "coco-stuff-171"]) == 2
    assert "car has no published number on it" in capsys.readouterr().err
    doc = tmp_path / "doc.md"
    doc.write_text("# no blocks\n<!-- reproduce:ovseg:start -->\n")
    with pytest.raises(OvssError, match="needs exactly one '<!-- reproduce:ovseg:start -->'"):
        update_docs(doc, "ovseg", [])
    args = ["reproduce", "--method", "ovseg", "--docs", str(doc), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "needs exactly one '<!-- reproduce:ovseg:start -->'" in capsys.readouterr().err


def test_a_doc_without_the_methods_block_gets_one(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Reproduction\n\nhand-written\n")
    row = run_reproduction([_toy_target(None)], lambda target: _toy(), tmp_path / "r")
    update_docs(doc, "toy", row)
    text = doc.read_text()
    assert text.startswith(
        "# Reproduction\n\nhand-written\n\n## toy\n\n<!-- reproduce:toy:start -->"
    )
    assert "| Toy | VOC-21 | – | d2-v0.6 | 50.0 | a test | – | not run:" in text
    update_docs(doc, "toy", row)
    assert doc.read_text() == text
