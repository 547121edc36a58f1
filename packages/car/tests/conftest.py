"""Shared fixtures of the CaR tests: the golden tiny CLIPs and cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(path.stem for path in (GOLDEN / "cases").glob("*.npz"))


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(2)


class GoldenCase:
    """One golden case: its arrays, with JSON strings decoded on access via ``json``."""

    def __init__(self, name: str) -> None:
        self.name = name
        with np.load(GOLDEN / "cases" / f"{name}.npz") as data:
            self.arrays = {key: data[key] for key in data.files}

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def json(self, key: str):
        return json.loads(str(self.arrays[key]))

    def steps(self, prefix: str = "") -> int:
        return int(self.arrays[f"{prefix}n_steps"])


@pytest.fixture(scope="session")
def golden_case():
    cache: dict[str, GoldenCase] = {}

    def get(name: str) -> GoldenCase:
        if name not in cache:
            cache[name] = GoldenCase(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_clips():
    """``(cam_clip, sem_clip)``: the golden tiny OpenAI-format CLIPs."""
    from ovss_car.clip_model import load_clip

    return load_clip(GOLDEN / "cam_clip.pth"), load_clip(GOLDEN / "sem_clip.pth")
