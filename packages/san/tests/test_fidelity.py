"""Our SAN against the outputs of the original code on the golden tiny checkpoint.

Tolerances are those the fixtures in ``tests/golden/`` were published with:
|ours - golden| <= atol + rtol * |golden|.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CASES

from ovss_common.fidelity import record
from ovss_san.predictor import SanPredictor

#: array -> (atol, rtol)
TOLERANCES = {
    "clip_feat_last": (3e-4, 0.0),
    "clip_cls_last": (3e-4, 0.0),
    "mask_preds": (2e-3, 1e-4),
    "attn_bias": (5e-3, 1e-4),
    "mask_emb": (1e-4, 0.0),
    "class_embed": (5e-5, 0.0),
    "mask_logits": (2e-3, 0.0),
    "scores": (5e-4, 1e-4),
}


def assert_close(name: str, ours: np.ndarray, golden: np.ndarray) -> None:
    atol, rtol = TOLERANCES[name]
    assert ours.shape == golden.shape, f"{name}: shape {ours.shape} != {golden.shape}"
    excess = np.abs(ours - golden) - (atol + rtol * np.abs(golden))
    assert excess.max() <= 0, f"{name}: max |diff| {np.abs(ours - golden).max():.3g} over tolerance"


@pytest.fixture(scope="module", params=CASES)
def case_run(request, golden_case, tiny_model):
    case = golden_case(request.param)
    model, cfg = tiny_model(case.options["config_overrides"])
    prediction = SanPredictor(model, cfg).predict(
        case["image"], case.vocabulary, pipeline=case.options["pipeline"]
    )
    return case, model, prediction


def test_preprocessing_matches(case_run):
    case, _, prediction = case_run
    outputs = prediction.outputs
    np.testing.assert_array_equal(prediction.resized, case["resized_image"])
    assert list(outputs.images.image_sizes[0]) == case["resized_hw"].tolist()
    assert list(outputs.images.tensor.shape) == case["input_tensor_shape"].tolist()
    assert list(outputs.clip_input.shape) == case["clip_input_shape"].tolist()
    for tensor, key in (
        (outputs.images.tensor, "input_tensor_channel_sum"),
        (outputs.clip_input, "clip_input_channel_sum"),
    ):
        sums = tensor.double().sum(dim=(0, 2, 3)).numpy()
        np.testing.assert_allclose(sums, case[key], rtol=1e-6)


def test_intermediates_match(case_run):
    case, model, prediction = case_run
    outputs = prediction.outputs
    index = model.clip_rec_head.first_layer_idx
    ours = {
        "clip_feat_last": outputs.clip_features.maps[index][0],
        "clip_cls_last": outputs.clip_features.cls_tokens[index][0],
        "mask_preds": outputs.mask_preds[0],
        "attn_bias": outputs.attn_biases[0][0],
        "mask_emb": outputs.mask_embeddings[0],
        "class_embed": outputs.class_weights,
        "mask_logits": outputs.mask_logits[0],
    }
    for name, tensor in ours.items():
        assert_close(name, tensor.numpy(), case[name])
    scale = model.ov_classifier.logit_scale.exp().item()
    assert scale == pytest.approx(float(case["logit_scale_exp"]), rel=1e-6)


def test_scores_and_labels_match(case_run):
    case, _, prediction = case_run
    assert prediction.vocabulary == case.vocabulary
    record(case.name, "scores", prediction.scores.numpy(), case["scores"])
    assert_close("scores", prediction.scores.numpy(), case["scores"])
    agreement = (prediction.label_map == case["label"]).mean()
    assert agreement >= 0.999, f"label agreement {agreement:.5f}"


def test_gray_png_is_read_as_the_original_reads_it(tmp_path, golden_case):
    from PIL import Image

    from ovss_common.images import read_image

    case = golden_case("gray_portrait4")
    path = tmp_path / "gray.png"
    Image.fromarray(case["image_gray"]).save(path)
    np.testing.assert_array_equal(read_image(path, exif_transpose=True).rgb, case["image"])


def test_text_tower_truncation_is_exact(tiny_model):
    """Running the causal text tower only up to the last end-of-text token changes nothing."""
    from open_clip.tokenizer import tokenize

    model, _ = tiny_model()
    classifier = model.ov_classifier
    tokens = tokenize(["a photo of a cat.", "There is a large potted plant in the scene."])
    x = classifier.token_embedding(tokens) + classifier.positional_embedding
    for block in classifier.transformer.resblocks:
        x = block(x, attn_mask=classifier.attn_mask)
    x = classifier.ln_final(x)
    full = x[torch.arange(2), tokens.argmax(-1)] @ classifier.text_projection
    full = torch.nn.functional.normalize(full, dim=-1)
    torch.testing.assert_close(classifier.encode_tokens(tokens), full, atol=1e-6, rtol=1e-5)
