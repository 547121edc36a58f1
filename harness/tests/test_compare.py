"""``ovss compare`` on mini-voc with the tiny fixtures: report files, numbers, cache, RLE."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image
from test_methods import ovseg, san

from ovss.cli import main
from ovss.compare import disagreement
from ovss.rle import decode_entries
from ovss_common.outputs import read_label_map


def test_disagreement_is_the_mean_pairwise_fraction_of_scored_pixels():
    a = np.array([["cat", "dog"], ["cat", None]], dtype=object)
    b = np.array([["cat", "cat"], ["cat", "cat"]], dtype=object)
    c = np.array([["dog", "dog"], ["cat", None]], dtype=object)
    valid = np.array([[True, True], [True, False]])
    # a-b differ on 1 of 3 scored pixels, a-c on 1, b-c on 2.
    assert disagreement([a, b, c], valid) == (1 / 3 + 1 / 3 + 2 / 3) / 3
    assert disagreement([a], valid) == 0.0
    assert disagreement([a, b], np.zeros((2, 2), bool)) == 0.0


@san
@ovseg
def test_compare_writes_the_report_from_the_methods_runs(tmp_path, capsys):
    out = tmp_path / "mini-voc"
    args = ["compare", "--dataset", "mini-voc", "--tiny", "--methods", "san", "ovseg"]
    args += ["--limit", "2", "--device", "cpu", "--threads", "2", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    metrics = {m: json.loads((out / m / "metrics.json").read_text()) for m in ("san", "ovseg")}
    report = (out / "report.md").read_text()
    assert "UNTRAINED tiny weights for SAN, OVSEG" in report
    assert "Protocol: native" in report
    for method, values in metrics.items():
        assert values["num_images"] == 2
        row = f"| {method.upper()} | voc-20 | 2 | {values['mIoU']:.2f} | {values['fwIoU']:.2f} |"
        assert row in report
    html = (out / "report.html").read_text()
    assert "<table>" in html and "disagreements/" in html
    with (out / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    miou = {
        r["method"]: float(r["value"])
        for r in rows
        if r["metric"] == "mIoU" and r["definition"] == "d2-v0.6"
    }
    assert miou == {m: round(v["mIoU"], 4) for m, v in metrics.items()}
    assert {r["definition"] for r in rows if r["metric"] == "mIoU"} >= {"d2-main", "mmseg", "car"}
    for chart in ("miou", "seconds", "memory", "per_class"):
        assert Image.open(out / "charts" / f"{chart}.png").size[0] > 100
    strips = sorted(p.name for p in (out / "disagreements").glob("*.png"))
    assert len(strips) == 2
    assert "% of scored pixels differ" in report

    entries = json.loads((out / "san" / "sem_seg_predictions.json").read_text())
    image = next(iter({e["file_name"] for e in entries}))
    stem = image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    prediction = read_label_map(out / "san" / "predictions" / f"{stem}.png")
    np.testing.assert_array_equal(decode_entries(entries, image), prediction)

    assert main([*args[:5], "san", *args[7:]]) == 0
    again = json.loads((out / "san" / "metrics.json").read_text())
    assert again["num_predicted_now"] == 0 and again["mIoU"] == metrics["san"]["mIoU"]


@san
def test_harmonised_protocol_sends_canonical_names_in_the_dataset_space(tmp_path, capsys):
    out = tmp_path / "mini-voc"
    args = ["compare", "--dataset", "mini-voc", "--tiny", "--methods", "san", "--harmonised"]
    args += ["--limit", "1", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "san-harmonised" / "metrics.json").read_text())
    assert metrics["label_space"] == "voc-21"
    assert metrics["provenance"]["protocol"] == "harmonised"
    stem = json.loads((out / "san-harmonised" / "run.json").read_text())
    assert stem["cache_key"]["protocol"] == "harmonised"
    sidecar = next((out / "san-harmonised" / "predictions").glob("*.json"))
    sent = json.loads(sidecar.read_text())["vocabulary"]
    assert sent[0] == "background" and len(sent) == 21
    assert "Protocol: harmonised" in (out / "report.md").read_text()
