"""``ovss demo``: side-by-side pictures and index.html, and one line per missing checkpoint."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from test_methods import ovseg, san

from ovss.cli import main
from ovss.demo import DEFAULT_VOCABULARIES, default_items
from ovss.render import Panel, side_by_side


def test_default_items_are_the_registry_photos(tmp_path):
    items = default_items(tmp_path)
    assert [item.stem for item in items] == list(DEFAULT_VOCABULARIES)
    sizes = {item.stem: Image.open(item.image).size for item in items}
    assert sizes["astronaut"] == (512, 512) and sizes["voc_dining_room"] == (500, 375)
    before = items[0].image.stat().st_mtime_ns
    default_items(tmp_path)
    assert items[0].image.stat().st_mtime_ns == before


def test_side_by_side_scales_every_panel_to_one_height():
    rgb = np.zeros((100, 50, 3), np.uint8)
    panel = Panel("wide", np.full((50, 100, 3), 255, np.uint8), note="untrained")
    picture = side_by_side(rgb, [panel])
    # input 50 wide at height 100, the panel 200 wide at height 100, and an 8-pixel gap.
    assert picture.shape[1] == 50 + 8 + 200 and picture.shape[0] > 100


@san
@ovseg
def test_demo_tiny_on_a_custom_image(tmp_path, capsys):
    image = tmp_path / "noise.png"
    Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)).save(
        image
    )
    out = tmp_path / "demo"
    args = ["demo", "--tiny", "--methods", "san", "ovseg", "--image", str(image)]
    args += ["--classes", "cat", "dog", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert "untrained tiny weights" in capsys.readouterr().out
    picture = Image.open(out / "noise.png")
    assert picture.width > 3 * 80
    page = (out / "index.html").read_text()
    assert "untrained tiny weights" in page and 'src="noise.png"' in page
    summary = json.loads((out / "demo.json").read_text())
    runs = summary["images"][0]["runs"]
    assert set(runs) == {"san", "ovseg"} and all(r["seconds"] > 0 for r in runs.values())
    for method in ("san", "ovseg"):
        assert (out / method / "overlays" / "noise.png").is_file()
        assert summary["methods"][method]["untrained_weights"] is True


@san
@ovseg
def test_demo_without_weights_names_each_missing_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["demo", "--methods", "san", "ovseg", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("ovss: error:")
    assert lines[1].startswith("san:") and "san_vit_b_16.pth is missing" in lines[1]
    assert (
        lines[2].startswith("ovseg:") and "ovseg_swinbase_vitL14_ft_mpt.pth is missing" in lines[2]
    )
    assert not (tmp_path / "index.html").exists()
