"""A minimal protocol client for the method packages' worker tests (the harness has the real
one, with restarts and timeouts, in its own environment)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ovss_common.protocol import request

#: Seconds a test waits for one reply before it fails (a tiny model answers in seconds).
REPLY_TIMEOUT = float(os.environ.get("OVSS_TEST_REPLY_TIMEOUT", "300"))


class WorkerClient:
    """Starts ``python -m <module>`` in this environment and exchanges one line per request.

    A reply that does not come within ``timeout`` seconds kills the worker and fails the test,
    so a hung worker never hangs the suite.
    """

    def __init__(self, module: str, timeout: float = REPLY_TIMEOUT) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.timeout = timeout
        self.next_id = 0
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def ask(self, type: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (which must carry the request's id)."""
        self.next_id += 1
        self.process.stdin.write(json.dumps(request(type, self.next_id, **fields)) + "\n")
        self.process.stdin.flush()
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self.process.kill()
            raise AssertionError(f"no reply to {type} within {self.timeout:g} s") from None
        if not line:
            raise AssertionError(f"the worker exited before answering {type}")
        reply = json.loads(line)
        if reply.get("id") != self.next_id:
            raise AssertionError(f"reply {reply!r} does not answer request {self.next_id}")
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("shutdown")
            except AssertionError:
                self.process.kill()
        self.process.wait(timeout=60)


@contextmanager
def loaded_worker(module: str, **load: Any) -> Iterator[WorkerClient]:
    """A worker of ``module`` whose ``load`` (with the fields ``load``) succeeded; shut down
    on exit."""
    client = WorkerClient(module)
    try:
        reply = client.ask("load", **load)
        if not reply.get("ok"):
            raise AssertionError(f"load failed: {reply!r}")
        yield client
    finally:
        client.close()


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    """The structured error of a failed reply; asserts it failed and its message is one line."""
    if reply.get("ok"):
        raise AssertionError(f"expected an error reply, got {reply!r}")
    error = reply["error"]
    if "\n" in error["message"]:
        raise AssertionError(f"error message spans lines: {error['message']!r}")
    return error


def check_inspection(result: dict[str, Any], total_parameters: int) -> None:
    """Assert what every ``inspect`` result must satisfy: parameter rows that add up to the
    model's ``total_parameters`` (top-level rows, and every row's children), trainable + frozen
    = total per row, stages with calls and non-negative figures whose sums are the totals, and
    a scaling measurement with the vocabulary doubled."""
    parameters = result["parameters"]
    rows = parameters["rows"]
    if parameters["total"] != total_parameters:
        raise AssertionError(f"{parameters['total']} parameters reported, {total_parameters}")
    if sum(row["total"] for row in rows if row["depth"] == 1) != total_parameters:
        raise AssertionError("top-level parameter rows do not add up to the total")
    for row in rows:
        if row["trainable"] + row["frozen"] != row["total"]:
            raise AssertionError(f"{row['module']}: trainable + frozen != total")
        children = [
            r
            for r in rows
            if r["depth"] == row["depth"] + 1 and r["module"].startswith(row["module"] + ".")
        ]
        if children and sum(r["total"] for r in children) != row["total"]:
            raise AssertionError(f"{row['module']}: its rows do not add up to it")
    stages = result["stages"]
    if not stages or any(s["calls"] < 1 or s["flops"] < 0 or s["seconds"] < 0 for s in stages):
        raise AssertionError("every stage must have run, with non-negative figures")
    if sum(s["flops"] for s in stages) != result["total_flops"]:
        raise AssertionError("stage FLOPs do not add up to the total")
    classes = result["scaling"]["classes"]
    if classes != [len(result["vocabulary"]), 2 * len(result["vocabulary"])]:
        raise AssertionError(f"scaling measured at {classes}, not at C and 2C")


def inspect_image(
    client: WorkerClient, rgb: np.ndarray, vocabulary: list[str], folder: Path
) -> dict[str, Any]:
    """Save ``[H, W, 3]`` uint8 ``rgb`` as a PNG in ``folder`` and return the loaded worker's
    ``inspect`` result for it; asserts the request succeeded."""
    path = Path(folder) / "inspected.png"
    Image.fromarray(rgb).save(path)
    reply = client.ask("inspect", image=str(path), vocabulary=vocabulary)
    if not reply.get("ok"):
        raise AssertionError(f"inspect failed: {reply!r}")
    return reply["result"]
