"""Shared fixtures of the SAN tests: the golden tiny model and its cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
CONFIG = GOLDEN / "config.yaml"
CHECKPOINT = GOLDEN / "checkpoint.pth"
CASES = sorted(json.loads((GOLDEN / "cases.json").read_text()))


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

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]


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
    """``(model, cfg)`` of the golden tiny config and checkpoint, per config overrides."""
    from ovss_san.build import load_san

    cache: dict[tuple[str, ...], tuple] = {}

    def get(overrides: list[str] | tuple[str, ...] = ()):
        key = tuple(overrides)
        if key not in cache:
            cache[key] = load_san(CONFIG, CHECKPOINT, "cpu", list(overrides))
        return cache[key]

    return get
