"""ovss_common.fidelity: the per-case differences the fidelity tests record for ovss upgrade."""

from __future__ import annotations

import json

import numpy as np

from ovss_common.fidelity import ENV_VAR, record


def test_record_appends_one_line_per_call(monkeypatch, tmp_path):
    target = tmp_path / "fidelity.jsonl"
    monkeypatch.setenv(ENV_VAR, str(target))
    assert record("a", "scores", np.array([1.0, 2.0]), np.array([1.0, 2.5])) == 0.5
    assert record("a", "scores", np.zeros(2), np.zeros(3)) == float("inf")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines[0] == {"case": "a", "quantity": "scores", "max_abs_diff": 0.5}
    assert lines[1]["max_abs_diff"] == float("inf")


def test_record_writes_nothing_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert record("a", "scores", [1.0], [1.0]) == 0.0
    assert not list(tmp_path.iterdir())
