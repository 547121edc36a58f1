"""Device, dtype and thread settings of a torch worker, checked the same way by every method.

Imported only by the method workers (which have torch); torch is imported inside.
"""

from __future__ import annotations

from typing import Any

from ovss_common.protocol import WorkerError

DTYPE_NAMES = ("fp32", "fp16", "bf16")


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> Any:
    """The torch dtype named ``fp32``, ``fp16`` or ``bf16``."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def resolve_dtype(name: str, device: str) -> Any:
    """The torch dtype of ``fp32``/``fp16``/``bf16``; fp16 only on CUDA (CPU kernels lack it)."""
    if name == "fp16" and not device.startswith("cuda"):
        raise WorkerError("bad_option", "fp16 needs a CUDA device; use bf16 on the CPU", "dtype")
    return torch_dtype(name)


def configure(threads: int | None) -> dict[str, Any]:
    """Apply a thread count (None keeps torch's default) and turn TF32 off, so that fp32 means
    fp32 on GPUs too; returns the facts to record."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return {"threads": torch.get_num_threads(), "torch_version": torch.__version__}


def peak_device_memory(device: str) -> dict[str, int]:
    """``{"peak_device_memory_bytes": ...}`` on CUDA since the last reset (then reset); ``{}`` else."""
    import torch

    if not device.startswith("cuda"):
        return {}
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    return {"peak_device_memory_bytes": int(peak)}


def move(model: Any, device: str, dtype: Any) -> Any:
    """``model.to(device, dtype)`` with a one-line error for an unusable device."""
    try:
        return model.to(device=device, dtype=dtype)
    except (RuntimeError, AssertionError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkerError("bad_option", f"device {device!r}: {message}", "device") from None
