"""CaR's classifier of prompted images against the original's (README tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CASES

from ovss_car.classifier import combine_templates, preprocess_images, template_probabilities


def _passes(case):
    return ("", "stuff_") if "stuff_n_steps" in case else ("",)


@pytest.mark.parametrize("name", CASES)
def test_semantic_input_of_the_first_prompted_image(name, golden_case):
    case = golden_case(name)
    for prefix in _passes(case):
        for step in range(case.steps(prefix)):
            ours = preprocess_images([case[f"{prefix}s{step}_prompted0"]], 224)[0]
            np.testing.assert_allclose(ours.numpy(), case[f"{prefix}s{step}_sem_input0"], atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_template_probabilities_of_the_first_prompted_image(name, golden_case, tiny_clips):
    case = golden_case(name)
    _, sem_clip = tiny_clips
    for prefix in _passes(case):
        for step in range(case.steps(prefix)):
            image = case[f"{prefix}s{step}_sem_input0"][None]
            texts = case.json(f"{prefix}s{step}_sem_texts")
            ours = template_probabilities(sem_clip, torch.from_numpy(image), texts)[:, 0]
            golden = case[f"{prefix}s{step}_template_probs"][:, 0]
            np.testing.assert_allclose(ours.numpy(), golden, atol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_double_softmax(name, golden_case):
    case = golden_case(name)
    for prefix in _passes(case):
        for step in range(case.steps(prefix)):
            probabilities = torch.from_numpy(case[f"{prefix}s{step}_template_probs"])
            np.testing.assert_allclose(
                combine_templates(probabilities).numpy(), case[f"{prefix}s{step}_S"], atol=1e-6
            )
