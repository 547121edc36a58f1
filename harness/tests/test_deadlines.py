"""Nothing waits forever: every worker request has a deadline, and a worker past it is stopped
(the toy worker's ``hang_on`` / ``hang_on_load`` options never answer)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from ovss.cli import main
from ovss.datasets.mini_voc import STEMS
from ovss.engine import EvalSettings
from ovss.environments import Deadlines, read_method_package
from ovss.errors import OvssError
from ovss.runner import run_eval
from ovss.worker import ModelSettings
from ovss_common.protocol import LoadRequest


def _image(path, size=(40, 50)):
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(path)
    return path


def test_segment_names_the_image_that_hung_and_goes_on(toy_package, tmp_path, capsys):
    stuck, fine = _image(tmp_path / "stuck.png"), _image(tmp_path / "fine.png")
    out = tmp_path / "out"
    argv = ["segment", "--method", "toy", "--classes", "sky", "--out", str(out), "--timeout", "3"]
    started = time.monotonic()
    options = ["--option", 'hang_on=["stuck"]']
    assert main([*argv, *options, "--image", str(stuck), str(fine)]) == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert f"{stuck}: the toy worker did not finish segment within 3 s and was stopped" in err
    assert (out / "fine.png").is_file() and not (out / "stuck.png").exists()


def test_eval_records_a_hung_image_and_finishes_the_others(toy_package, tmp_path):
    out = tmp_path / "run"
    model = ModelSettings(
        method="toy", load=LoadRequest(options={"hang_on": [STEMS[1]]}), timeout=3
    )
    metrics = run_eval(EvalSettings(model=model, dataset="mini-voc", out=out))
    assert metrics["failed"] == [STEMS[1]] and metrics["num_images"] == len(STEMS) - 1
    failure = json.loads((out / "failures.jsonl").read_text().splitlines()[0])
    assert failure["stem"] == STEMS[1] and "within 3 s" in failure["error"]


def test_a_load_that_never_ends_is_one_line(toy_package, tmp_path, capsys):
    image = _image(tmp_path / "a.png")
    argv = ["segment", "--method", "toy", "--classes", "sky", "--out", str(tmp_path / "o")]
    extra = ["--option", "hang_on_load=true", "--timeout", "2", "--image", str(image)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("ovss: error:")]
    assert len(errors) == 1 and "did not finish load within 2 s" in errors[0]


def test_default_deadlines_grow_with_the_image(tmp_path):
    deadlines = Deadlines(load=100, segment=10, per_megapixel=20)
    small = _image(tmp_path / "small.png", size=(10, 10))
    large = _image(tmp_path / "large.png", size=(1000, 2000))
    assert deadlines.for_image(small) == pytest.approx(10 + 20 * 100 / 1e6)
    assert deadlines.for_image(large) == pytest.approx(10 + 20 * 2.0)
    assert deadlines.for_image(tmp_path / "absent.png") == 10


def test_each_method_declares_its_deadlines(tmp_path):
    from conftest import REPO

    for name in ("san", "ovseg", "car"):
        package = read_method_package(REPO / "packages" / name)
        assert package.deadlines != Deadlines(), name
    project = tmp_path / "m"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "m"\nversion = "0"\n[tool.ovss.method]\nname = "m"\nworker = "m.w"\n'
        "[tool.ovss.method.deadlines]\nload = -1\n"
    )
    with pytest.raises(OvssError, match="positive seconds"):
        read_method_package(project)
