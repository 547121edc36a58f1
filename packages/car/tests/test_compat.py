"""Compatibility patches this package carries (listed under [[tool.ovss.patches]] in
pyproject.toml) and the tests that fail without them."""

from __future__ import annotations

import importlib
import warnings


def test_openai_clip_imports():
    """Patch setuptools-below-81: openai-clip 1.0.1 does ``from pkg_resources import
    packaging``; with setuptools >= 81 (no pkg_resources) ``import clip`` fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clip = importlib.import_module("clip")
    assert callable(clip.tokenize)
