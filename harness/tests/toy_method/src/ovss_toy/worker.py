"""Toy worker: label = brightness bucket, one bucket per vocabulary name.

Load options drive failures for the harness tests:

- ``crash_on``: stems whose segmentation kills the process (always);
- ``crash_once_on`` + ``state_dir``: stems that kill it the first time only;
- ``unassigned_below``: brightness under which pixels get "no class" (65535);
- ``hang_on``: stems whose segmentation never finishes; ``hang_on_load``: loading never does.

``weights`` (optional) must be a JSON file; its sha256 is reported like a checkpoint's.

Fault injection for the sweep tests: when ``$OVSS_CONFIG_DIR/toy-faults.json`` holds
``{"kill_parent_after": N}``, the worker kills the process that started it (a sweep's Ray
task) and exits when asked for its (N+1)-th image, as if the task had been killed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from ovss_common.hashing import sha256_file
from ovss_common.protocol import NO_CLASS, WorkerError
from ovss_common.server import Method, Segmentation, run


def _hang() -> None:
    """Never return (as a worker stuck in a deadlock or a endless loop would)."""
    print("toy: hanging", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


class Toy(Method):
    name = "toy"
    exif_transpose = True

    def load(self, request):
        self.options = dict(request.options)
        if self.options.get("hang_on_load"):
            _hang()
        weights_sha256 = None
        if request.weights is not None:
            path = Path(request.weights)
            if not path.is_file():
                raise WorkerError("bad_checkpoint", f"{path}: no such checkpoint", str(path))
            try:
                json.loads(path.read_text())
            except ValueError:
                raise WorkerError(
                    "bad_checkpoint", f"{path}: not a toy checkpoint", str(path)
                ) from None
            weights_sha256 = sha256_file(path)
        return {
            "package_version": "0.0.1",
            "config": request.config,
            "config_sha256": None,
            "weights": request.weights,
            "weights_sha256": weights_sha256,
            "device": request.device or "cpu",
            "dtype": request.dtype,
            "threads": request.threads,
        }

    def _maybe_crash(self, stem: str) -> None:
        if stem in self.options.get("crash_on", []):
            print(f"toy: crashing on {stem}", file=sys.stderr, flush=True)
            os._exit(3)
        if stem in self.options.get("crash_once_on", []):
            marker = Path(self.options["state_dir"]) / f"crashed-{stem}"
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                print(f"toy: crashing once on {stem}", file=sys.stderr, flush=True)
                os._exit(3)

    def _maybe_kill_parent(self) -> None:
        self.segmented = getattr(self, "segmented", 0) + 1
        faults = Path(os.environ.get("OVSS_CONFIG_DIR", "/nonexistent")) / "toy-faults.json"
        if not faults.is_file():
            return
        after = json.loads(faults.read_text()).get("kill_parent_after")
        if after is not None and self.segmented > after:
            print("toy: killing the task that started me", file=sys.stderr, flush=True)
            os.kill(os.getppid(), signal.SIGKILL)
            os._exit(3)

    def segment(self, image, request):
        stem = image.path.stem
        if stem in self.options.get("hang_on", []):
            _hang()
        self._maybe_crash(stem)
        self._maybe_kill_parent()
        start = time.perf_counter()
        brightness = image.rgb.astype(np.int64).mean(axis=2)
        count = len(request.vocabulary)
        labels = np.minimum((brightness * count) // 256, count - 1).astype(np.int64)
        threshold = self.options.get("unassigned_below")
        if threshold is not None:
            labels[brightness < threshold] = NO_CLASS
        scores = np.stack([(labels == c).astype(np.float32) for c in range(count)])
        print(f"toy: segmented {stem}", file=sys.stderr, flush=True)
        return Segmentation(
            label_map=labels,
            vocabulary=list(request.vocabulary),
            scores=scores,
            timings={"model": time.perf_counter() - start},
        )


if __name__ == "__main__":
    run(Toy())
