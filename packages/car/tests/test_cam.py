"""CaR's Grad-CAM and CLIP-ES refinement against the original's (README tolerances)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import CASES
from PIL import Image

from ovss_car.cam import ClipCam
from ovss_car.text import class_embeddings

BACKGROUND_TEMPLATE = ("a clean origami {}.",)


@pytest.mark.parametrize("name", CASES)
def test_cam_steps(name, golden_case, tiny_clips):
    case = golden_case(name)
    cam_clip, _ = tiny_clips
    config = yaml.safe_load(str(case["config_yaml"]))["car"]
    image = Image.fromarray(case["image"])
    for prefix in ("", "stuff_") if "stuff_n_steps" in case else ("",):
        background = class_embeddings(cam_clip, case.json(f"{prefix}bg_cls"), BACKGROUND_TEMPLATE)
        cam = ClipCam(cam_clip, config["clipes_threshold"], background)
        for step in range(case.steps(prefix)):
            key = f"{prefix}s{step}_"
            foreground = class_embeddings(cam_clip, case.json(f"{key}cam_text"), None)
            outputs = cam(image, foreground)
            np.testing.assert_allclose(
                outputs.probabilities.numpy(), case[f"{key}cam_probs"], atol=1e-5
            )
            np.testing.assert_array_equal(outputs.retried, case[f"{key}gradcam_retry"].astype(bool))
            np.testing.assert_allclose(outputs.gradcams, case[f"{key}gradcam"], atol=1e-4)
            golden = case[f"{key}refined_grid"]
            scale = np.abs(golden).max(axis=(1, 2), keepdims=True)
            assert np.all(np.abs(outputs.refined - golden) <= 1e-4 * np.abs(golden) + 1e-6 * scale)
            prompt = outputs.masks > config["mask_threshold"]
            agreement = (prompt == case[f"{key}prompt_masks"].astype(bool)).mean()
            assert agreement >= 0.9999, f"{key}: prompt masks agree on {agreement:.6f}"
