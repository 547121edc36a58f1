"""``python -m ovss_common.doctor DISTRIBUTION [MODELS_MODULE]``: what ``ovss doctor`` checks
inside one method environment, as JSON lines ``{"check", "status", "detail", "fix"}``.

- ``versions``: Python, and every direct dependency of the method's distribution;
- ``device``: whether torch sees CUDA, and each GPU's name, capability and free memory;
- ``weights <name>``: per weights entry of the method's zoo, cached or not, and the cached
  file's SHA-256 checked against its pinned or recorded digest.

``status`` is ``ok``, ``fail`` (``fix`` says what to do) or ``info`` (nothing to fix).
torch is imported inside the checks: ``ovss_common`` does not depend on it.
"""

from __future__ import annotations

import importlib
import json
import platform
import re
import sys
from collections.abc import Iterator
from importlib import metadata
from typing import Any


def _row(check: str, status: str, detail: str, fix: str | None = None) -> dict[str, Any]:
    return {"check": check, "status": status, "detail": detail, "fix": fix}


def versions(distribution: str) -> dict[str, Any]:
    """Python and the installed version of every direct dependency of ``distribution``."""
    found = [f"python {platform.python_version()}"]
    for requirement in metadata.requires(distribution) or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            return _row("versions", "fail", f"{name} is not installed", "rebuild the environment")
    return _row("versions", "ok", ", ".join(found))


def device() -> dict[str, Any]:
    """Whether torch sees CUDA; per GPU its name, compute capability and free memory."""
    try:
        import torch
    except ImportError:
        return _row("device", "info", "no torch in this environment")

    if not torch.cuda.is_available():
        return _row("device", "info", f"torch {torch.__version__}: no CUDA device, CPU only")
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        gpus.append(
            f"cuda:{index} {name} (sm_{major}{minor}, {free / 2**30:.1f}/{total / 2**30:.1f} GiB free)"
        )
    return _row(
        "device", "ok", f"torch {torch.__version__}, CUDA {torch.version.cuda}: " + "; ".join(gpus)
    )


def weights(models_module: str) -> Iterator[dict[str, Any]]:
    """Every weights entry of the module's ``MODELS``: cached and verified, or not cached."""
    from ovss_common.zoo import WeightsError, verify

    registry = importlib.import_module(models_module).MODELS
    for entry in registry.weights_entries().values():
        check = f"weights {registry.method}/{entry.name}"
        if not entry.path.is_file():
            yield _row(
                check,
                "info",
                f"not downloaded ({entry.digest_status}); fetched on first use",
                None,
            )
            continue
        try:
            digest = verify(entry)
        except (WeightsError, OSError) as exc:
            yield _row(check, "fail", str(exc), f"delete {entry.path} and run again online")
            continue
        yield _row(check, "ok", f"{entry.path} sha256 {digest[:12]}... verified")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m ovss_common.doctor DISTRIBUTION [MODELS_MODULE]", file=sys.stderr)
        return 2
    rows = [versions(args[0]), device()]
    if len(args) == 2:
        rows += list(weights(args[1]))
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
