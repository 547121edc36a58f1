"""The worker side of the protocol: one loop that every method worker runs.

A method implements ``Method`` (``load``, ``segment`` and optionally ``inspect``); the loop
does everything else: reading requests, validating them, decoding images, timing, peak
memory, writing label maps / scores / sidecars, and turning failures into structured error
replies so that the worker keeps serving. A method's ``worker.py`` is two lines::

    from ovss_common.server import run
    run(MyMethod())
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ovss_common import protocol
from ovss_common.images import DecodedImage, ImageError, read_image
from ovss_common.outputs import write_json, write_label_map, write_scores
from ovss_common.protocol import (
    NO_CLASS,
    PROTOCOL_VERSION,
    InspectRequest,
    LoadRequest,
    SegmentRequest,
    WorkerError,
)


@dataclass
class Segmentation:
    """What a method returns for one image.

    Attributes:
        label_map: ``[H, W]`` integer indices into ``vocabulary``; ``65535`` = no class.
        vocabulary: the effective vocabulary: the names as sent, then any names the
            method appended (``"others"``, ...).
        scores: ``[C, H, W]`` float32 per-class scores at the image size, C = len(vocabulary),
            or None when the request did not ask for them.
        timings: seconds spent in ``preprocess``, ``model`` and ``postprocess``.
        extra: method-specific facts for the sidecar (peak device memory, steps, ...).
    """

    label_map: np.ndarray
    vocabulary: list[str]
    scores: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Method(ABC):
    """A segmentation method served by a worker process.

    Attributes:
        name: the method's short name (``"san"``).
        exif_transpose: whether images are EXIF-oriented before ``segment`` sees them.
    """

    name: str
    exif_transpose: bool = True

    @abstractmethod
    def load(self, request: LoadRequest) -> dict[str, Any]:
        """Build the model once. Returns provenance facts recorded with every output:
        at least ``package_version``, ``config_sha256``, ``weights_sha256``, ``device``,
        ``dtype``, ``threads``. Raise ``WorkerError`` for bad configs or checkpoints."""

    @abstractmethod
    def segment(self, image: DecodedImage, request: SegmentRequest) -> Segmentation:
        """Segment one decoded image with the request's vocabulary."""

    def inspect(self, image: DecodedImage, request: InspectRequest) -> dict[str, Any]:
        """Structure and cost of the loaded model on one image (optional)."""
        raise WorkerError("unsupported", f"method {self.name} does not support inspect")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux; no-op elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    """Peak resident memory since the last ``reset_peak_rss`` (Linux) or process start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Server:
    """Serves one ``Method`` over JSON lines until ``shutdown`` or end of input."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.load_info: dict[str, Any] | None = None

    def handle(self, message: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Answer one decoded message; returns ``(reply, stop)``."""
        request_id = message.get("id") if isinstance(message.get("id"), int) else None
        try:
            request_id, request_type = protocol.check_header(message)
            if request_type == "shutdown":
                return protocol.ok_reply(request_id, {}), True
            if request_type == "ping":
                return protocol.ok_reply(request_id, self._ping()), False
            if request_type == "load":
                return protocol.ok_reply(request_id, self._load(message)), False
            if request_type == "segment":
                return protocol.ok_reply(request_id, self._segment(message)), False
            if request_type == "inspect":
                return protocol.ok_reply(request_id, self._inspect(message)), False
            raise WorkerError(
                "unknown_request", f"unknown request type {request_type!r}", request_type
            )
        except WorkerError as error:
            return protocol.error_reply(request_id, error), False
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            error = WorkerError("internal", f"{type(exc).__name__}: {exc}".splitlines()[0])
            return protocol.error_reply(request_id, error), False

    def _ping(self) -> dict[str, Any]:
        return {
            "method": self.method.name,
            "pid": os.getpid(),
            "loaded": self.load_info is not None,
        }

    def _load(self, message: dict[str, Any]) -> dict[str, Any]:
        request = protocol.parse_load(message)
        self.load_info = None
        start = time.perf_counter()
        info = dict(self.method.load(request))
        info.setdefault("method", self.method.name)
        info["load_seconds"] = time.perf_counter() - start
        info["pipeline"] = request.pipeline
        info["protocol_version"] = PROTOCOL_VERSION
        self.load_info = info
        return info

    def _require_loaded(self) -> dict[str, Any]:
        if self.load_info is None:
            raise WorkerError("not_loaded", "send a successful load request first")
        return self.load_info

    def _read(self, path: str) -> DecodedImage:
        try:
            return read_image(path, exif_transpose=self.method.exif_transpose)
        except ImageError as exc:
            raise WorkerError("bad_image", str(exc), path) from None

    def _segment(self, message: dict[str, Any]) -> dict[str, Any]:
        request = protocol.parse_segment(message)
        load_info = self._require_loaded()
        reset_peak_rss()
        start = time.perf_counter()
        image = self._read(request.image)
        read_seconds = time.perf_counter() - start
        result = self.method.segment(image, request)
        _check_segmentation(result, image, request)
        write_start = time.perf_counter()
        prefix = request.output_prefix
        outputs = {"label_map": f"{prefix}.png", "scores": None, "sidecar": f"{prefix}.json"}
        timing = {"read": read_seconds, **result.timings}
        stored = _stored_labels(result.label_map, request)
        try:
            write_label_map(outputs["label_map"], stored)
            if request.save_scores:
                outputs["scores"] = f"{prefix}.npz"
                write_scores(outputs["scores"], result.scores)
            timing["write"] = time.perf_counter() - write_start
            timing["total"] = time.perf_counter() - start
            memory = {"peak_rss_bytes": peak_rss_bytes()}
            sidecar = {
                "protocol_version": PROTOCOL_VERSION,
                "image": image.sidecar(),
                "vocabulary": request.vocabulary,
                "effective_vocabulary": result.vocabulary,
                "stuff": request.stuff,
                "outputs": outputs,
                "timing": timing,
                "memory": memory,
                "method": result.extra,
                "provenance": load_info,
            }
            if request.label_ids is not None:
                sidecar["label_ids"] = request.label_ids
            if request.provenance is not None:
                sidecar["harness"] = request.provenance
            write_json(outputs["sidecar"], sidecar)
        except OSError as exc:
            raise WorkerError(
                "output_error", f"cannot write outputs at {prefix}: {exc}", prefix
            ) from None
        return {
            **outputs,
            "effective_vocabulary": result.vocabulary,
            "timing": timing,
            "memory": memory,
            "height": image.height,
            "width": image.width,
        }

    def _inspect(self, message: dict[str, Any]) -> dict[str, Any]:
        request = protocol.parse_inspect(message)
        self._require_loaded()
        return self.method.inspect(self._read(request.image), request)


def _stored_labels(label_map: np.ndarray, request: SegmentRequest) -> np.ndarray:
    """The label map as it is written: vocabulary indices, or the request's ``label_ids``
    (``[H, W]`` integers; "no class" becomes ``unassigned_id`` when one is given)."""
    if request.label_ids is None:
        return label_map
    labels = np.asarray(label_map, dtype=np.int64)
    if labels[labels != NO_CLASS].max(initial=0) >= len(request.label_ids):
        raise WorkerError(
            "internal", f"{request.image}: a class beyond the sent vocabulary has no label id"
        )
    lookup = np.full(NO_CLASS + 1, NO_CLASS, dtype=np.int64)
    lookup[: len(request.label_ids)] = request.label_ids
    if request.unassigned_id is not None:
        lookup[NO_CLASS] = request.unassigned_id
    return lookup[labels]


def _check_segmentation(result: Segmentation, image: DecodedImage, request: SegmentRequest) -> None:
    """A method bug must not become a silently wrong file: check shapes and ranges."""
    expected = (image.height, image.width)
    labels = np.asarray(result.label_map)
    if labels.shape != expected:
        raise WorkerError(
            "internal", f"{request.image}: label map is {labels.shape}, the image {expected}"
        )
    if result.vocabulary[: len(request.vocabulary)] != request.vocabulary:
        raise WorkerError("internal", "the effective vocabulary must start with the names as sent")
    valid = labels[labels != NO_CLASS]
    if valid.size and (valid.min() < 0 or valid.max() >= len(result.vocabulary)):
        raise WorkerError("internal", f"{request.image}: label map indexes outside the vocabulary")
    if request.save_scores:
        shape = (len(result.vocabulary), *expected)
        if result.scores is None or tuple(np.shape(result.scores)) != shape:
            raise WorkerError("internal", f"{request.image}: scores must have shape {shape}")


def serve(method: Method, input: IO[str], output: IO[str]) -> int:
    """Answer requests from ``input`` on ``output`` until ``shutdown`` or end of input."""
    server = Server(method)
    for line in input:
        if not line.strip():
            continue
        try:
            message = protocol.decode(line)
        except WorkerError as error:
            reply, stop = protocol.error_reply(None, error), False
        else:
            reply, stop = server.handle(message)
        output.write(protocol.encode(reply))
        output.flush()
        if stop:
            break
    return 0


def run(method: Method) -> None:
    """Entry point of a worker process: serve on stdin/stdout, keep stdout for the protocol.

    File descriptor 1 is re-pointed at stderr, so prints from the method or from C
    libraries land in the log instead of corrupting the reply stream.
    """
    reply_stream = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.exit(serve(method, sys.stdin, reply_stream))
