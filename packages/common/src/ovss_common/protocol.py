"""The JSON-lines worker protocol: message schema, validation and structured errors.

One request or reply per line, UTF-8 JSON objects. Every message carries
``protocol_version``; a request carries an integer ``id`` that its reply repeats.

Request types and their fields (see ``docs/protocol.md`` for the full description):

- ``load``: ``config``, ``weights``, ``device``, ``dtype``, ``threads``, ``pipeline``, ``options``
- ``segment``: ``image``, ``vocabulary``, ``output_prefix``, ``save_scores``, ``stuff``,
  ``label_ids``, ``unassigned_id``, ``provenance``
- ``inspect``: ``image``, ``vocabulary``, ``options``
- ``ping``, ``shutdown``: no fields

A reply is ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": {"type": ..., "message": ..., "input": ...}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1

#: Largest vocabulary a label map can index: 65535 is reserved for "no class".
MAX_VOCABULARY = 65535
NO_CLASS = 65535

DTYPES = ("fp32", "fp16", "bf16")
PIPELINES = ("eval", "demo")


class WorkerError(Exception):
    """An error that becomes a structured error reply.

    Attributes:
        type: a short machine-readable kind, one of ``ERROR_TYPES``.
        message: one line that says what is wrong.
        input: the offending input (a path, a field name, a class name), or None.
    """

    def __init__(self, type: str, message: str, input: Any = None) -> None:
        super().__init__(message)
        if type not in ERROR_TYPES:
            raise ValueError(f"unknown error type {type!r}")
        self.type = type
        self.message = message
        self.input = input

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "input": self.input}


ERROR_TYPES = (
    "bad_request",  # not JSON, not an object, a missing or mistyped field
    "unknown_request",  # a request type this worker does not serve
    "protocol_mismatch",  # the request speaks another protocol_version
    "not_loaded",  # segment/inspect before a successful load
    "bad_image",  # missing, unreadable, corrupt or unsupported image
    "bad_vocabulary",  # empty, duplicate, blank or too many class names
    "bad_checkpoint",  # missing, corrupt, wrong-architecture or wrong-checksum weights
    "bad_config",  # missing or invalid method config
    "bad_option",  # an option the method does not accept
    "output_error",  # the outputs could not be written
    "unsupported",  # a valid request this method cannot serve (e.g. no inspect)
    "internal",  # an unexpected exception inside the method
)


@dataclass(frozen=True)
class LoadRequest:
    """What the worker needs to build a model once."""

    config: str | None = None
    weights: str | None = None
    device: str | None = None
    dtype: str = "fp32"
    threads: int | None = None
    pipeline: str = "eval"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentRequest:
    """One image to segment with one vocabulary; outputs go to ``output_prefix`` + suffix.

    Attributes:
        stuff: the vocabulary's stuff names, for a method with a separate stuff pass.
        label_ids: the id each vocabulary index is stored as (an evaluation sends the dataset
            ids of its vocabulary): the label map is written in those ids, once. None: the
            label map indexes the effective vocabulary.
        unassigned_id: with ``label_ids``, the id a "no class" pixel is stored as (None: it
            stays 65535).
        provenance: the caller's record of the run, written into the sidecar as ``harness``.
    """

    image: str
    vocabulary: list[str]
    output_prefix: str
    save_scores: bool = False
    stuff: list[str] | None = None
    label_ids: list[int] | None = None
    unassigned_id: int | None = None
    provenance: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        """The request's fields as a message carries them."""
        return {
            "image": self.image,
            "vocabulary": list(self.vocabulary),
            "output_prefix": self.output_prefix,
            "save_scores": self.save_scores,
            "stuff": self.stuff,
            "label_ids": self.label_ids,
            "unassigned_id": self.unassigned_id,
            "provenance": self.provenance,
        }


@dataclass(frozen=True)
class InspectRequest:
    """Structure and cost analysis of the loaded model on one image and vocabulary."""

    image: str
    vocabulary: list[str]
    options: dict[str, Any] = field(default_factory=dict)


def encode(message: dict[str, Any]) -> str:
    """Serialise one message as a single JSON line (ending in a newline)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def decode(line: str) -> dict[str, Any]:
    """Parse one line into a message object, or raise ``WorkerError('bad_request')``."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError as exc:
        raise WorkerError("bad_request", f"not a JSON line: {exc.msg}") from None
    if not isinstance(message, dict):
        raise WorkerError("bad_request", "a message must be a JSON object")
    return message


def request(type: str, id: int, **fields: Any) -> dict[str, Any]:
    """Build a request message."""
    return {"protocol_version": PROTOCOL_VERSION, "id": id, "type": type, **fields}


def ok_reply(id: int | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"protocol_version": PROTOCOL_VERSION, "id": id, "ok": True, "result": result}


def error_reply(id: int | None, error: WorkerError) -> dict[str, Any]:
    return {"protocol_version": PROTOCOL_VERSION, "id": id, "ok": False, "error": error.to_dict()}


def _field(message: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if name not in message or message[name] is None:
        if default is _REQUIRED:
            raise WorkerError("bad_request", f"missing field {name!r}", name)
        return default
    value = message[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WorkerError("bad_request", f"field {name!r} has the wrong type", name)
    return value


_REQUIRED = object()


def check_header(message: dict[str, Any]) -> tuple[int, str]:
    """Validate ``protocol_version``, ``id`` and ``type``; return ``(id, type)``."""
    version = message.get("protocol_version")
    if version != PROTOCOL_VERSION:
        raise WorkerError(
            "protocol_mismatch",
            f"this worker speaks protocol_version {PROTOCOL_VERSION}, the request {version!r}",
            "protocol_version",
        )
    request_id = _field(message, "id", int, _REQUIRED)
    request_type = _field(message, "type", str, _REQUIRED)
    return request_id, request_type


def check_vocabulary(names: Any, what: str = "vocabulary") -> list[str]:
    """Validate a vocabulary: a non-empty list of unique, non-blank, stripped strings."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise WorkerError("bad_request", f"{what} must be a list of strings", what)
    if not names:
        raise WorkerError("bad_vocabulary", f"{what} is empty", what)
    if len(names) > MAX_VOCABULARY:
        raise WorkerError(
            "bad_vocabulary",
            f"{what} has {len(names)} names; a label map indexes at most {MAX_VOCABULARY}",
            what,
        )
    seen: set[str] = set()
    for name in names:
        if not name.strip():
            raise WorkerError("bad_vocabulary", f"{what} contains a blank name", name)
        if name != name.strip():
            raise WorkerError("bad_vocabulary", f"{what} name {name!r} is not stripped", name)
        if name in seen:
            raise WorkerError("bad_vocabulary", f"{what} repeats the name {name!r}", name)
        seen.add(name)
    return list(names)


def parse_load(message: dict[str, Any]) -> LoadRequest:
    dtype = _field(message, "dtype", str, "fp32")
    if dtype not in DTYPES:
        raise WorkerError("bad_request", f"dtype must be one of {', '.join(DTYPES)}", "dtype")
    pipeline = _field(message, "pipeline", str, "eval")
    if pipeline not in PIPELINES:
        raise WorkerError(
            "bad_request", f"pipeline must be one of {', '.join(PIPELINES)}", "pipeline"
        )
    threads = _field(message, "threads", int, None)
    if threads is not None and threads < 1:
        raise WorkerError("bad_request", "threads must be at least 1", "threads")
    return LoadRequest(
        config=_field(message, "config", str, None),
        weights=_field(message, "weights", str, None),
        device=_field(message, "device", str, None),
        dtype=dtype,
        threads=threads,
        pipeline=pipeline,
        options=_field(message, "options", dict, {}),
    )


def _valid_ids(ids: list[Any], count: int) -> bool:
    """``count`` integers in ``[0, 65535]``."""
    return len(ids) == count and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= NO_CLASS for i in ids
    )


def parse_segment(message: dict[str, Any]) -> SegmentRequest:
    vocabulary = check_vocabulary(_field(message, "vocabulary", list, _REQUIRED))
    stuff = _field(message, "stuff", list, None)
    if stuff is not None:
        stuff = check_vocabulary(stuff, "stuff")
        outside = [name for name in stuff if name not in set(vocabulary)]
        if outside:
            raise WorkerError(
                "bad_vocabulary", f"stuff name {outside[0]!r} is not in the vocabulary", outside[0]
            )
    label_ids = _field(message, "label_ids", list, None)
    if label_ids is not None and not _valid_ids(label_ids, len(vocabulary)):
        raise WorkerError(
            "bad_request",
            "label_ids must give one id in [0, 65535] per vocabulary name",
            "label_ids",
        )
    unassigned_id = _field(message, "unassigned_id", int, None)
    if unassigned_id is not None and not 0 <= unassigned_id <= NO_CLASS:
        raise WorkerError("bad_request", "unassigned_id must lie in [0, 65535]", "unassigned_id")
    return SegmentRequest(
        image=_field(message, "image", str, _REQUIRED),
        vocabulary=vocabulary,
        output_prefix=_field(message, "output_prefix", str, _REQUIRED),
        save_scores=_field(message, "save_scores", bool, False),
        stuff=stuff,
        label_ids=label_ids,
        unassigned_id=unassigned_id,
        provenance=_field(message, "provenance", dict, None),
    )


def parse_inspect(message: dict[str, Any]) -> InspectRequest:
    return InspectRequest(
        image=_field(message, "image", str, _REQUIRED),
        vocabulary=check_vocabulary(_field(message, "vocabulary", list, _REQUIRED)),
        options=_field(message, "options", dict, {}),
    )
