"""OVSeg (open-vocabulary segmentation with mask-adapted CLIP) inference on current releases."""

import warnings

# detectron2 0.6 scripts a few helpers when it is imported, and torch 2.x deprecates
# torch.jit.script; the warning says nothing about OVSeg, so it stays out of every log.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
# The OpenAI ``clip`` package imports pkg_resources (kept by pinning setuptools < 81).
warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*", category=UserWarning)
