"""CaR's text embeddings against the original's, on the golden tiny CLIPs (atol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CASES

from ovss_car.text import class_embeddings

#: The template CaR's CAM uses for background words.
BACKGROUND_TEMPLATE = ("a clean origami {}.",)


@pytest.mark.parametrize("name", CASES)
def test_cam_text_features(name, golden_case, tiny_clips):
    case = golden_case(name)
    cam_clip, _ = tiny_clips
    for prefix in ("", "stuff_") if "stuff_n_steps" in case else ("",):
        background = class_embeddings(cam_clip, case.json(f"{prefix}bg_cls"), BACKGROUND_TEMPLATE)
        np.testing.assert_allclose(background.numpy(), case[f"{prefix}bg_text_features"], atol=1e-5)
        for step in range(case.steps(prefix)):
            texts = case.json(f"{prefix}s{step}_cam_text")
            foreground = class_embeddings(cam_clip, texts, None)
            np.testing.assert_allclose(
                foreground.numpy(), case[f"{prefix}s{step}_fg_text_features"], atol=1e-5
            )
