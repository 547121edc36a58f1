"""Shared fixtures: an isolated config/dataset area, mini-voc, and the toy method worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovss.datasets import build_mini_voc
from ovss.environments import ensure_environment, read_method_package

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[1]
TOY_PROJECT = TESTS / "toy_method"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


@pytest.fixture(scope="session")
def datasets_dir(tmp_path_factory) -> Path:
    """A datasets root holding mini-voc, built once per session by the real builder."""
    root = tmp_path_factory.mktemp("datasets")
    build_mini_voc(root / "mini-voc")
    return root


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path, datasets_dir):
    """Every test sees its own config dir, the session's datasets and the toy method."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(datasets_dir))
    monkeypatch.setenv("OVSS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("OVSS_METHOD_DIRS", str(TOY_PROJECT))


@pytest.fixture(scope="session")
def toy_package():
    """The toy method package with its environment built from its lock."""
    package = read_method_package(TOY_PROJECT)
    ensure_environment(package)
    return package
