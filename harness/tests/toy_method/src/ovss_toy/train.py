"""Toy trainer: follows the ``ovss_common.training`` contract without a model.

It reads every sample (a label it cannot read, or a value outside the classes after the
lookup, stops it with ``error.json``), then "trains" for ``max_iter`` iterations (default 4):
one ``metrics.jsonl`` line each, a checkpoint every ``checkpoint_period`` iterations
(``model_<iteration>.pth`` and ``last_checkpoint``) and ``model_final.pth``, all JSON so that
the toy worker loads them as weights. With ``resume`` it continues after the last checkpoint.
With an evaluation it runs each dataset's command once at the end, placeholders filled in,
and logs its mIoU. The override ``crash_at N`` makes it exit at iteration N without an
``error.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ovss_common.training import (
    ERROR_FILE,
    METRICS_FILE,
    TrainRequest,
    TrainRequestError,
)


class ToyError(Exception):
    """A handled training error: its message goes to ``error.json``."""


def _check_samples(request: TrainRequest) -> int:
    """Read every label; returns the number of trained pixels."""
    data = request.data
    lookup = None if data.label_lookup is None else np.array(data.label_lookup)
    pixels = 0
    for image, label in data.samples:
        if not Path(image).is_file():
            raise ToyError(f"{image}: no such image")
        try:
            with Image.open(label) as opened:
                values = np.asarray(opened).astype(np.int64)
        except OSError as exc:
            raise ToyError(f"{label}: unreadable label ({exc})") from None
        if lookup is not None:
            values = lookup[values]
        trained = values != data.ignore_label
        if (values[trained] >= len(data.classes)).any():
            raise ToyError(f"{label}: label values outside the {len(data.classes)} classes")
        pixels += int(trained.sum())
    return pixels


def _save(path: Path, iteration: int) -> None:
    path.write_text(json.dumps({"toy_iteration": iteration}), encoding="utf-8")


def _evaluate(request: TrainRequest, iteration: int, weights: Path) -> dict[str, float]:
    """Run each evaluation command on ``weights``; returns mIoU per dataset."""
    scores = {}
    out = Path(request.out)
    for dataset in request.evaluation.datasets:
        folder = out / "eval" / str(iteration) / dataset
        fill = {
            "{config}": str(out / "config.yaml"),
            "{weights}": str(weights),
            "{out}": str(folder),
        }
        argv = [fill.get(part, part) for part in request.evaluation.command[dataset]]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ToyError(f"evaluation on {dataset} failed: {last}")
        scores[dataset] = json.loads((folder / "metrics.json").read_text())["mIoU"]
    return scores


def train(request: TrainRequest) -> None:
    out = Path(request.out)
    overrides = dict(zip(request.overrides[::2], request.overrides[1::2], strict=True))
    pixels = _check_samples(request)
    (out / "config.yaml").write_text(f"config: {request.config}\n", encoding="utf-8")
    max_iter = request.max_iter or 4
    period = request.checkpoint_period or max_iter
    start = 0
    if request.resume and (out / "last_checkpoint").is_file():
        last = out / (out / "last_checkpoint").read_text().strip()
        start = json.loads(last.read_text())["toy_iteration"]
    with (out / METRICS_FILE).open("a", encoding="utf-8") as metrics:
        for iteration in range(start + 1, max_iter + 1):
            if str(iteration) == overrides.get("crash_at"):
                print(file=sys.stderr)
                sys.exit(3)
            loss = pixels / iteration
            line = {"iteration": iteration, "lr": 0.01, "total_loss": loss}
            metrics.write(json.dumps(line) + "\n")
            print(f"\rtoy: iteration {iteration}/{max_iter}", end="", file=sys.stderr, flush=True)
            if iteration % period == 0:
                name = f"model_{iteration:07d}.pth"
                _save(out / name, iteration)
                (out / "last_checkpoint").write_text(name)
        print(file=sys.stderr)
        final = out / "model_final.pth"
        _save(final, max_iter)
        if request.evaluation is not None:
            scores = _evaluate(request, max_iter, final)
            line = {"iteration": max_iter, **{f"{d}/mIoU": s for d, s in scores.items()}}
            metrics.write(json.dumps(line) + "\n")


def _fail(out: Path, error: Exception) -> int:
    (out / ERROR_FILE).write_text(json.dumps({"message": str(error)}))
    return 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--request", required=True, type=Path)
    args = parser.parse_args()
    try:
        request = TrainRequest.read(args.request)
    except TrainRequestError as exc:
        return _fail(args.request.parent, exc)
    try:
        train(request)
    except ToyError as exc:
        return _fail(Path(request.out), exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
