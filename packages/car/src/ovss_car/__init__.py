"""CaR (CLIP as RNN) training-free open-vocabulary segmentation on current releases."""

import warnings

# The OpenAI ``clip`` package imports pkg_resources (kept by pinning setuptools < 81).
warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*", category=UserWarning)
