"""SAN (Side Adapter Network) inference on current releases, loading the released checkpoints."""

import warnings

# detectron2 0.6 scripts a few helpers when it is imported, and torch 2.x deprecates
# torch.jit.script; the warning says nothing about SAN, so it stays out of every log.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
