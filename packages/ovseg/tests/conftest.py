"""Shared fixtures of the OVSeg tests: the golden tiny model and its cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
CONFIG = GOLDEN / "config.yaml"
CONFIG_DEMO = GOLDEN / "config_demo.yaml"
CHECKPOINT = GOLDEN / "checkpoint.pth"
CASES_INFO = {case["name"]: case for case in json.loads((GOLDEN / "cases.json").read_text())}
CASES = sorted(path.stem for path in (GOLDEN / "cases").glob("*.npz"))


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(2)


class GoldenCase:
    """One golden case: its arrays and decoded options."""

    def __init__(self, name: str) -> None:
        self.name = name
        with np.load(GOLDEN / "cases" / f"{name}.npz") as data:
            self.arrays = {key: data[key] for key in data.files}
        self.options = json.loads(str(self.arrays["options_json"]))
        self.vocabulary = json.loads(str(self.arrays["vocabulary_json"]))
        self.names_used = json.loads(str(self.arrays["class_names_used_json"]))
        self.pipeline = self.options["path"]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    @property
    def overrides(self) -> list[str]:
        return [str(item) for pair in self.options["config_overrides"].items() for item in pair]


@pytest.fixture(scope="session")
def golden_case():
    cache: dict[str, GoldenCase] = {}

    def get(name: str) -> GoldenCase:
        if name not in cache:
            cache[name] = GoldenCase(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_model():
    """``(model, cfg)`` of a golden tiny config and the checkpoint, per config overrides."""
    from ovss_ovseg.build import load_ovseg

    cache: dict[tuple, tuple] = {}

    def get(pipeline: str = "eval", overrides: list[str] | tuple[str, ...] = ()):
        key = (pipeline, tuple(overrides))
        if key not in cache:
            config = CONFIG_DEMO if pipeline == "demo" else CONFIG
            cache[key] = load_ovseg(config, CHECKPOINT, "cpu", list(overrides))
        return cache[key]

    return get
