"""``ovss eval`` end to end with the toy worker on mini-voc."""

import json

import numpy as np
import pytest

from ovss.cli import main
from ovss.datasets.mini_voc import STEMS
from ovss.engine import EvalSettings
from ovss.errors import OvssError
from ovss.runner import run_eval
from ovss.worker import ModelSettings
from ovss_common.outputs import read_label_map
from ovss_common.protocol import LoadRequest


def _eval(out, options=None, **extra):
    model = ModelSettings(method="toy", load=LoadRequest(options=options or {}))
    return run_eval(EvalSettings(model=model, dataset="mini-voc", out=out, **extra))


def test_eval_writes_predictions_confusions_and_metrics(toy_package, tmp_path):
    out = tmp_path / "run"
    metrics = _eval(out)
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["num_images"] == len(STEMS) and stored["num_failed"] == 0
    assert {"mIoU", "fwIoU", "mACC", "pACC", "definition", "per_class"} <= set(stored)
    assert stored["definition"] == "d2-v0.6" and stored["label_space"] == "voc-21"
    provenance = stored["provenance"]
    assert provenance["method"] == "toy" and provenance["dataset"] == "mini-voc"
    assert len(provenance["vocabulary_sha256"]) == 64 and provenance["lock_sha256"]
    assert 0.0 <= metrics["mIoU"] <= 100.0
    for stem in STEMS:
        prediction = read_label_map(out / "predictions" / f"{stem}.png")
        assert prediction.max() < 21  # dataset ids of voc-21
        assert (out / "confusion" / f"{stem}.npz").is_file()
        sidecar = json.loads((out / "predictions" / f"{stem}.json").read_text())
        assert sidecar["harness"]["label_space"] == "voc-21" and "model" in sidecar["timing"]
    assert not (out / ".work").exists()


def test_resumed_eval_skips_finished_images(toy_package, tmp_path):
    out = tmp_path / "run"
    first = _eval(out, limit=2)
    assert first["num_predicted_now"] == 2 and first["num_images"] == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "confusion").iterdir()}
    second = _eval(out)
    assert second["num_predicted_now"] == len(STEMS) - 2 and second["num_images"] == len(STEMS)
    assert all((out / "confusion" / n).stat().st_mtime_ns == t for n, t in stamps.items())
    third = _eval(out)
    assert third["num_predicted_now"] == 0 and third["mIoU"] == second["mIoU"]


def test_worker_killed_mid_evaluation_is_restarted(toy_package, tmp_path):
    options = {"crash_once_on": [STEMS[1]], "state_dir": str(tmp_path / "state")}
    metrics = _eval(tmp_path / "run", options=options)
    assert metrics["restarts"] == 1 and metrics["num_failed"] == 0
    assert metrics["num_images"] == len(STEMS)


def test_image_that_always_kills_the_worker_is_recorded_and_the_run_continues(
    toy_package, tmp_path
):
    out = tmp_path / "run"
    metrics = _eval(out, options={"crash_on": [STEMS[2]]})
    assert metrics["failed"] == [STEMS[2]] and metrics["num_images"] == len(STEMS) - 1
    failure = json.loads((out / "failures.jsonl").read_text().splitlines()[0])
    assert failure["stem"] == STEMS[2] and "died" in failure["error"]
    again = _eval(out, options={"crash_on": [STEMS[2]]})
    assert again["num_predicted_now"] == 0 and again["failed"] == [STEMS[2]]


def test_folder_of_another_run_is_refused(toy_package, tmp_path):
    out = tmp_path / "run"
    _eval(out, limit=1)
    with pytest.raises(OvssError, match="differs in options"):
        _eval(out, limit=1, options={"unassigned_below": 10})
    restarted = _eval(out, limit=1, options={"unassigned_below": 10}, restart=True)
    assert restarted["num_predicted_now"] == 1


def test_unassigned_pixels_become_background_on_voc21(toy_package, tmp_path):
    out = tmp_path / "run"
    _eval(out, limit=1, options={"unassigned_below": 256})  # every pixel "no class"
    prediction = read_label_map(out / "predictions" / f"{STEMS[0]}.png")
    assert np.all(prediction == 0)  # voc-21 maps "no class" to background


def test_eval_cli_summary_and_exit_codes(toy_package, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["eval", "--method", "toy", "--dataset", "mini-voc", "--out", str(out)]) == 0
    assert "mIoU" in capsys.readouterr().out
    code = main(
        ["eval", "--method", "toy", "--dataset", "ade20k-150", "--out", str(tmp_path / "a")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ovss: error:") and err.count("\n") == 1
    assert main(["eval", "--method", "nosuchmethod", "--dataset", "mini-voc"]) == 2
    assert "nosuchmethod" in capsys.readouterr().err


def test_a_folder_from_before_the_engine_resumes_and_a_broken_one_is_refused(
    toy_package, tmp_path, capsys
):
    out = tmp_path / "run"
    first = _eval(out, limit=2)
    # What the earlier runner could leave: per-image work files of an interrupted image.
    work = out / ".work"
    work.mkdir()
    (work / f"{STEMS[2]}.png").write_bytes(b"partial")
    resumed = _eval(out)
    assert resumed["num_predicted_now"] == len(STEMS) - 2 and not work.exists()
    assert resumed["per_class"] != {} and first["num_images"] == 2
    sidecar = json.loads((out / "predictions" / f"{STEMS[2]}.json").read_text())
    assert sidecar["harness"]["prediction_ids"] == "dataset ids"
    assert sidecar["outputs"]["label_map"] == str(out / "predictions" / f"{STEMS[2]}.png")

    (out / "run.json").write_text("{ not json")
    capsys.readouterr()
    argv = ["eval", "--method", "toy", "--dataset", "mini-voc", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.json: unreadable" in err[0] and "--restart" in err[0]
    assert main([*argv, "--restart"]) == 0
