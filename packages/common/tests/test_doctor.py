"""``python -m ovss_common.doctor``: the checks run inside a method environment."""

from __future__ import annotations

import json
import sys

from ovss_common import doctor
from ovss_common.hashing import sha256_bytes

REGISTRY = """
from pathlib import Path
from ovss_common.models import ModelEntry, ModelRegistry
from ovss_common.zoo import WeightsEntry

WEIGHTS = WeightsEntry(name="w", method="doc", filename="w.bin", url="https://x/w.bin", sha256="{sha}")
MODELS = ModelRegistry(
    method="doc", default="m", models={{"m": ModelEntry(name="m", config=Path("c.yaml"), weights=(WEIGHTS,))}}
)
"""


def test_versions_device_and_weights(tmp_path, monkeypatch, capsys):
    content = b"released weights"
    (tmp_path / "doc_models.py").write_text(REGISTRY.format(sha=sha256_bytes(content)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    sys.modules.pop("doc_models", None)

    def rows() -> dict[str, dict]:
        assert doctor.main(["ovss-common", "doc_models"]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {row["check"]: row for row in map(json.loads, lines)}

    found = rows()
    assert found["versions"]["status"] == "ok" and "numpy" in found["versions"]["detail"]
    assert found["device"]["status"] in ("ok", "info")
    assert found["weights doc/w"]["status"] == "info"
    cached = tmp_path / "cache" / "weights" / "doc" / "w.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"something else")
    broken = rows()["weights doc/w"]
    assert broken["status"] == "fail" and "differs from the pinned" in broken["detail"]
    assert broken["fix"] == f"delete {cached} and run again online"
    cached.write_bytes(content)
    assert rows()["weights doc/w"]["status"] == "ok"


def test_usage(capsys):
    assert doctor.main([]) == 2
    assert "usage" in capsys.readouterr().err
