"""``ovss inspect``: the tables on the tiny SAN through its worker, and the generated sections
of a Markdown page."""

from __future__ import annotations

import json

import pytest
from test_methods import san

from ovss.cli import main
from ovss.errors import OvssError
from ovss.inspect import (
    DEFAULT_VOCABULARY,
    Table,
    format_markdown,
    markdown_table,
    text_table,
    update_doc,
)
from ovss.markdown import markers


@san
def test_san_tiny_prints_the_tables(tmp_path, capsys):
    out = tmp_path / "san.json"
    code = main(["inspect", "--method", "san", "--tiny", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out
    for title in ("Parameters", "Stages", "Shapes through the pipeline", "Cost with C = 5"):
        assert title in text
    assert "side adapter ViT" in text and "mask-class logits" in text
    report = json.loads(out.read_text())
    assert report["vocabulary"] == DEFAULT_VOCABULARY
    assert report["image"] == {
        "height": 375,
        "width": 500,
        "source": report["image"]["source"],
    }
    assert report["provenance"]["untrained_weights"] is True
    assert report["total_flops"] > 0


def test_random_weights_and_weights_exclude_each_other(capsys):
    code = main(["inspect", "--method", "san", "--weights", "x.pth", "--random-weights"])
    assert code == 2
    assert "--random-weights" in capsys.readouterr().err


def _report(method: str) -> dict:
    """A minimal report of the shape the workers return."""
    return {
        "method": method,
        "architecture": "toy",
        "image": {"height": 2, "width": 3, "source": "toy.png"},
        "vocabulary": ["cat"],
        "parameters": {
            "total": 10,
            "trainable": 4,
            "frozen": 6,
            "rows": [{"module": "a", "depth": 1, "total": 10, "trainable": 4, "frozen": 6}],
            "training": {"summary": "a little", "source": "here"},
        },
        "stages": [
            {
                "stage": "s",
                "depth": 1,
                "calls": 1,
                "seconds": 0.5,
                "cpu_seconds": 0.9,
                "flops": 2e9,
                "per_class": True,
                "output": "[1, 2]",
            }
        ],
        "total_flops": 2e9,
        "total_seconds": 0.5,
        "shapes": [{"tensor": "x", "shape": [1, 2], "note": "n|b"}],
        "scaling": {
            "classes": [1, 2],
            "rows": [
                {
                    "stage": "s",
                    "grows": True,
                    "replayed": False,
                    "flops": [2e9, 4e9],
                    "seconds": [0.5, 1.0],
                }
            ],
            "total_flops": [2e9, 4e9],
            "total_seconds": [0.5, 1.0],
            "flops_per_class": 2e9,
            "seconds_per_class": 0.5,
            "note": "scaling note",
        },
        "notes": ["a note"],
        "load": {"random_weights": True, "config": "c.yaml", "device": "cpu"},
    }


def test_tables_render_as_text_and_markdown():
    table = Table("T", ["name", "n"], [["a", "1"], ["bb", "22"]], right=(1,))
    assert text_table(table).splitlines() == ["T", "name   n", "----  --", "a      1", "bb    22"]
    assert markdown_table(table).splitlines()[2:4] == ["| name | n |", "| --- | ---: |"]
    markdown = format_markdown(_report("toy"))
    assert "weights: random (seeded), untrained" in markdown
    assert "n\\|b" in markdown and "| per added class |  | 2.00 |  | 0.500 |" in markdown


def test_update_doc_rewrites_only_the_generated_section(tmp_path):
    begin, end = markers("inspect:toy")
    doc = tmp_path / "page.md"
    doc.write_text(f"# Title\n\nhand-written\n\n{begin}\nold\n{end}\n\nafter\n")
    update_doc(doc, _report("toy"))
    update_doc(doc, _report("toy"))
    text = doc.read_text()
    assert text.startswith("# Title\n\nhand-written\n\n") and text.endswith(f"{end}\n\nafter\n")
    assert "old" not in text and text.count("**Parameters") == 1
    with pytest.raises(OvssError, match="needs exactly one"):
        update_doc(doc, _report("other"))
