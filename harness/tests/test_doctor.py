"""``ovss doctor``: one line per check, the fix for each problem, exit 1 when any fails."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ovss.cli import main
from ovss.datasets import register_dataset


def _lines(err_and_out: str) -> list[str]:
    return [line for line in err_and_out.splitlines() if line.strip()]


def test_a_healthy_method_and_dataset(toy_package, capsys):
    assert main(["doctor", "--methods", "toy"]) == 0
    lines = _lines(capsys.readouterr().out)
    assert lines[0].startswith("ok   env toy:")
    assert any(line.startswith("ok   versions toy: python 3.11") for line in lines)
    assert any(line.startswith("--   device toy: no torch") for line in lines)
    assert any(line.startswith("ok   dataset mini-voc:") for line in lines)
    assert any(line.startswith("--   dataset ade20k-150: not prepared") for line in lines)
    assert lines[-1].startswith("all ") and lines[-1].endswith(" checks passed")


def test_a_broken_user_dataset_fails_with_its_fix(toy_package, tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "a.png")
    (labels / "a.png").write_bytes(b"not a png")
    register_dataset("mine", images, labels, ["road"], 255)
    assert main(["doctor", "--methods", "toy"]) == 1
    lines = _lines(capsys.readouterr().out)
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith("FAIL dataset mine:")
    assert "-> fix: correct the files, or ovss datasets register mine again" in failed[0]
    assert lines[-1] == f"1 of {len(lines) - 1} checks failed"


def test_a_missing_environment_fails_with_its_fix(tmp_path, monkeypatch, capsys):
    project = tmp_path / "ghost"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "ghost"\nversion = "0"\n'
        '[tool.ovss.method]\nname = "ghost"\nworker = "ghost.worker"\n'
    )
    (project / "uv.lock").write_text("version = 1\n")
    monkeypatch.setenv("OVSS_METHOD_DIRS", str(project))
    assert main(["doctor", "--methods", "ghost"]) == 1
    first = _lines(capsys.readouterr().out)[0]
    assert first == f"FAIL env ghost: {project / '.venv'} is missing -> fix: nox -s env-ghost"


def test_an_unknown_method_is_one_line(capsys):
    assert main(["doctor", "--methods", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and err.count("\n") == 1
