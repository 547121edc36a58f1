"""``ovss visualize`` on the sem_seg_predictions.json of a real ``ovss eval`` folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovss.cli import main
from ovss.datasets.mini_voc import STEMS
from ovss.engine import EvalSettings
from ovss.errors import OvssError
from ovss.runner import run_eval
from ovss.visualize import visualize
from ovss.worker import ModelSettings
from ovss_common.protocol import LoadRequest


@pytest.fixture
def eval_folder(toy_package, tmp_path):
    out = tmp_path / "eval"
    model = ModelSettings(method="toy", load=LoadRequest())
    run_eval(EvalSettings(model=model, dataset="mini-voc", out=out))
    return out


def test_visualize_draws_every_predicted_image_beside_its_ground_truth(eval_folder, tmp_path):
    written = visualize(eval_folder / "sem_seg_predictions.json", "mini-voc", tmp_path / "vis")
    assert sorted(p.stem for p in written) == sorted(STEMS)
    for path in written:
        picture = np.asarray(Image.open(path))
        prediction = np.asarray(Image.open(eval_folder / "predictions" / f"{path.stem}.png"))
        scale = min(480, prediction.shape[0]) / prediction.shape[0]
        # input, ground truth and prediction side by side at one height
        assert picture.shape[1] >= 3 * prediction.shape[1] * scale
        assert picture.ndim == 3 and picture.std() > 0


def test_visualize_cli_and_label_space_checks(eval_folder, tmp_path, capsys):
    predictions = eval_folder / "sem_seg_predictions.json"
    args = ["visualize", "--predictions", str(predictions), "--dataset", "mini-voc"]
    assert main([*args, "--out", str(tmp_path / "vis"), "--limit", "1"]) == 0
    assert "1 images" in capsys.readouterr().out
    assert len(list((tmp_path / "vis").glob("*.png"))) == 1
    # A detectron2-style file elsewhere, with an id beyond the label space, is refused.
    entries = json.loads(predictions.read_text())
    entries[0]["category_id"] = 99
    other = tmp_path / "other.json"
    other.write_text(json.dumps(entries))
    with pytest.raises(OvssError, match="beyond label space voc-21"):
        visualize(other, "mini-voc", tmp_path / "bad")
    assert main([*args[:2], str(tmp_path / "missing.json"), *args[3:], "--out", "x"]) == 2
