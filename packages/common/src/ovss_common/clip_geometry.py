"""Geometry of OpenAI's CLIP ViTs, as ``clip.model.CLIP`` takes it (facts of the released
models; used to build them with random weights for benchmarks and layout tests)."""

from __future__ import annotations

OPENAI_CLIP_GEOMETRIES: dict[str, dict[str, int]] = {
    "ViT-B/16": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=16,
        context_length=77,
        vocab_size=49408,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "ViT-L/14": dict(
        embed_dim=768,
        image_resolution=224,
        vision_layers=24,
        vision_width=1024,
        vision_patch_size=14,
        context_length=77,
        vocab_size=49408,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
}
