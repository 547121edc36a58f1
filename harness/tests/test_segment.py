"""``ovss segment`` through the toy worker."""

import json

import numpy as np
from PIL import Image

from ovss.cli import main
from ovss_common.outputs import read_label_map


def _image(path, value=200, size=(6, 10)):
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def test_segment_writes_label_map_sidecar_scores_and_overlay(toy_package, tmp_path, capsys):
    image = _image(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    argv = ["segment", "--method", "toy", "--image", str(image), "--out", str(out)]
    assert main([*argv, "--classes", " sky ", "road", "--save-scores"]) == 0
    labels = read_label_map(out / "photo.png")
    assert labels.shape == (6, 10) and set(np.unique(labels)) == {1}
    assert np.load(out / "photo.npz")["scores"].shape == (2, 6, 10)
    sidecar = json.loads((out / "photo.json").read_text())
    assert sidecar["vocabulary"] == ["sky", "road"]  # stripped before sending
    assert sidecar["harness"]["method"] == "toy" and sidecar["harness"]["git_commit"] is not None
    overlay = Image.open(out / "overlays" / "photo.png")
    assert overlay.size == (10, 6) and overlay.mode == "RGB"


def test_vocabulary_errors_are_one_line(toy_package, tmp_path, capsys):
    image = _image(tmp_path / "photo.png")
    base = ["segment", "--method", "toy", "--image", str(image), "--out", str(tmp_path / "o")]
    names_file = tmp_path / "names.txt"
    names_file.write_text("cat\n\n dog\ncat\n")
    for extra, message in [
        (["--classes", "cat", "cat"], "'cat' appears twice"),
        (["--classes", " "], "name 1 is empty"),
        (["--classes-file", str(names_file)], "'cat' appears twice"),
        (["--classes-file", str(tmp_path / "none.txt")], "cannot read the classes file"),
        ([], "exactly one of --classes"),
    ]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_classes_from_a_dataset(toy_package, tmp_path):
    image = _image(tmp_path / "photo.png")
    out = tmp_path / "o"
    argv = ["segment", "--method", "toy", "--image", str(image), "--out", str(out)]
    assert main([*argv, "--classes-from", "voc-20"]) == 0
    assert len(json.loads((out / "photo.json").read_text())["vocabulary"]) == 20


def test_same_stem_twice_is_an_error(toy_package, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    first, second = _image(tmp_path / "x.png"), _image(tmp_path / "a" / "x.jpg")
    argv = ["segment", "--method", "toy", "--classes", "c", "--out", str(tmp_path / "o")]
    assert main([*argv, "--image", str(first), str(second)]) == 2
    assert "share the stem 'x'" in capsys.readouterr().err


def test_bad_images_fail_alone(toy_package, tmp_path, capsys):
    good = _image(tmp_path / "good.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "o"
    argv = ["segment", "--method", "toy", "--classes", "c", "--out", str(out)]
    assert main([*argv, "--image", str(corrupt), str(good)]) == 2
    err = capsys.readouterr().err
    assert "corrupt.jpg" in err and "1 of 2 images failed" in err
    assert (out / "good.png").is_file() and not (out / "corrupt.png").exists()


def test_a_folder_or_a_pattern_segments_every_image_in_it(toy_package, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "deeper").mkdir(parents=True)
    _image(photos / "a.png")
    _image(photos / "b.JPG")
    _image(photos / "deeper" / "c.png")
    (photos / "notes.txt").write_text("not an image")
    argv = ["segment", "--method", "toy", "--classes", "sky", "road"]
    out = tmp_path / "from-folder"
    assert main([*argv, "--image", str(photos), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]
    out = tmp_path / "from-pattern"
    assert main([*argv, "--image", str(photos / "**" / "*.png"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]


def test_an_empty_folder_or_a_pattern_without_match_is_one_line(toy_package, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["segment", "--method", "toy", "--classes", "sky", "--out", str(tmp_path / "o")]
    assert main([*argv, "--image", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "a folder without images" in err and err.count("\n") == 1
    assert main([*argv, "--image", str(tmp_path / "*.png")]) == 2
    err = capsys.readouterr().err
    assert "the pattern matches no file" in err and err.count("\n") == 1
