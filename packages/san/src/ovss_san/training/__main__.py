"""``python -m ovss_san.training --request RUN/train_request.json``: SAN's trainer, as
``ovss train --method san`` starts it (directly, or once per process under torchrun).

A handled error ends the process with one line on stderr and in ``RUN/error.json``; anything
unexpected also leaves its traceback in ``RUN/traceback-<rank>.txt``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import yaml

from ovss_common.checkpoints import CheckpointError
from ovss_common.images import ImageError
from ovss_common.protocol import WorkerError
from ovss_common.quiet import QUIET_ENV
from ovss_common.training import (
    ERRORS_TO_FILE_ENV,
    TrainRequest,
    TrainRequestError,
    write_error,
)
from ovss_common.zoo import WeightsError
from ovss_san.training.trainer import TrainingError, train

#: Errors whose message is already the one line a user needs.
EXPECTED = (
    TrainRequestError,
    TrainingError,
    CheckpointError,
    ImageError,
    WeightsError,
    WorkerError,
    KeyError,
    ValueError,
    FileNotFoundError,
    yaml.YAMLError,
)


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message; for an error re-raised from a data-loading worker
    process, the original error's own line."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Caught ") and "Original Traceback" in text:
        kind = type(exc)
        for name in (f"{kind.__module__}.{kind.__qualname__}", kind.__qualname__):
            if lines[-1].startswith(f"{name}: "):
                return lines[-1].removeprefix(f"{name}: ")
        return lines[-1]
    return lines[0]


def _report(out: Path | None, message: str) -> None:
    """``out/error.json`` (first failing process) and, unless the launcher prints that file,
    one line on stderr."""
    written = out is not None and out.is_dir() and write_error(out, message)
    if not (written and os.environ.get(ERRORS_TO_FILE_ENV)):
        print(f"error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ovss_san.training", description=__doc__)
    parser.add_argument("--request", required=True, type=Path, help="train_request.json")
    args = parser.parse_args(argv)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    out = None
    try:
        request = TrainRequest.read(args.request)
        out = Path(request.out)
        out.mkdir(parents=True, exist_ok=True)
        train(request)
    except KeyboardInterrupt:
        _report(out, "interrupted; the last checkpoint is kept (--resume continues from it)")
        return 130
    except EXPECTED as exc:
        _report(out, _one_line(exc))
        return 1
    except Exception as exc:
        rank = os.environ.get("RANK", "0")
        if out is not None and out.is_dir():
            (out / f"traceback-{rank}.txt").write_text(traceback.format_exc(), encoding="utf-8")
        _report(out, f"internal error: {type(exc).__name__}: {_one_line(exc)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
