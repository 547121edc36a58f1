"""What every worker's ``inspect`` shares: parameters per module, per-stage FLOPs and time,
shape descriptions, and the layout of the report.

- ``parameter_rows`` counts parameters per module prefix, split into those the method trained
  and those it kept frozen (each method says which, with its source).
- ``StageRecorder`` runs the real pipeline with *probes*: methods or functions temporarily
  wrapped so that each call runs inside a named stage. A stage's figures are exclusive: while
  a nested stage runs, its parent's clock and FLOP counter are paused. FLOPs come from
  ``torch.utils.flop_counter.FlopCounterMode`` with two formulas added for the fused CPU
  attention kernels it does not know.
- ``describe`` turns a result (tensor, array, tuple of them) into a short shape text.

ovss_common imports without torch: torch is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ovss_common.class_lists import class_file

#: What the FLOP figures count, for every report.
FLOP_NOTE = (
    "FLOPs are counted by torch.utils.flop_counter.FlopCounterMode: matrix products, "
    "convolutions and attention, 2 FLOPs per multiply-add. Elementwise operations, norms, "
    "softmaxes, resizes and work outside torch (NumPy, OpenCV, DenseCRF) count 0."
)
#: What the times measure.
TIME_NOTE = (
    "Times are wall-clock and process CPU seconds of one run, measured while the FLOP "
    "counter was active (it adds a little Python work per operation); each stage's own time, "
    "without the stages nested in it."
)
_MISSING = object()


def parameter_rows(
    model: Any,
    trained: Callable[[str], bool],
    depth: int = 2,
    deeper: Sequence[str] = (),
) -> dict[str, Any]:
    """Parameter counts per module, split into trained and frozen as the method was trained.

    Args:
        model: anything with ``named_parameters()`` yielding ``(name, parameter)`` pairs whose
            parameters have ``numel()`` (a torch module); a parameter shared by two modules is
            counted once, under the name torch yields first.
        trained: whether the parameter of this name was trained by the method.
        depth: rows for every prefix of up to ``depth`` dotted parts.
        deeper: prefixes whose children also get rows (one level further).

    Returns:
        ``{"total", "trainable", "frozen", "rows"}``; each row has ``module``, ``depth``
        (1 = top level), ``total``, ``trainable``, ``frozen``; rows of depth 1 sum to the
        total, and a row's children follow it.
    """
    rows: dict[str, dict[str, Any]] = {}
    total = trainable = 0
    for name, parameter in model.named_parameters():
        count = int(parameter.numel())
        is_trained = bool(trained(name))
        total += count
        trainable += count if is_trained else 0
        parts = name.split(".")
        levels = depth
        for prefix in deeper:
            if name.startswith(prefix + "."):
                levels = max(levels, prefix.count(".") + 2)
        for level in range(1, min(levels, len(parts)) + 1):
            key = ".".join(parts[:level])
            row = rows.setdefault(
                key, {"module": key, "depth": level, "total": 0, "trainable": 0, "frozen": 0}
            )
            row["total"] += count
            row["trainable" if is_trained else "frozen"] += count
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "rows": list(rows.values()),
    }


def describe(value: Any) -> str | None:
    """A short shape text of a result: ``[1, 100, 40, 54]`` for a tensor or array,
    ``3 x [1, 641, 641]`` for a list of equal shapes (also of one), ``([2, 3], [4])`` for a mixed tuple;
    None for anything without a shape."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return str([int(size) for size in shape])
    if isinstance(value, tuple | list) and value:
        parts = [describe(item) for item in value]
        if any(part is None for part in parts):
            return None
        if len(set(parts)) == 1:
            return f"{len(parts)} x {parts[0]}"
        return "(" + ", ".join(parts) + ")"
    return None


def shape_row(name: str, value: Any, note: str = "") -> dict[str, Any]:
    """One row of a report's shape table: ``value`` is a tensor, an array or a shape."""
    shape = getattr(value, "shape", value)
    return {"tensor": name, "shape": [int(size) for size in shape], "note": note}


def filler_names(vocabulary: Sequence[str], count: int) -> list[str]:
    """``count`` class names not in ``vocabulary``: VOC's, then ADE20K-150's, in order (used
    to measure how cost grows when a vocabulary doubles)."""
    taken = set(vocabulary)
    pool = [*class_file("voc-21")["names"][1:], *class_file("ade20k-150")["names"]]
    names = [name for name in dict.fromkeys(pool) if name not in taken]
    if len(names) < count:
        raise ValueError(f"only {len(names)} filler class names for {count} requested")
    return names[:count]


@contextlib.contextmanager
def patched(owner: Any, attribute: str, replacement: Any) -> Iterator[None]:
    """Set ``owner.attribute`` (a module, class or instance) to ``replacement`` for the block,
    then restore exactly what was there (an instance falls back to its class again)."""
    raw = vars(owner).get(attribute, _MISSING)
    if isinstance(raw, staticmethod):
        replacement = staticmethod(replacement)
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        if raw is _MISSING:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, raw)


@dataclass(frozen=True)
class Probe:
    """Run every call of ``owner.attribute`` inside stage ``stage``.

    Attributes:
        owner: a module, class or instance (patched for the duration of a run).
        attribute: the function or method to wrap.
        stage: the stage's name in the report.
        per_class: whether the stage's cost grows with the number of classes.
        keep: keep the last call's result (``StageStats.result``), e.g. to replay it later.
    """

    owner: Any
    attribute: str
    stage: str
    per_class: bool = False
    keep: bool = False


@dataclass
class StageStats:
    """One stage's own figures over a run (nested stages excluded)."""

    name: str
    parent: str | None
    per_class: bool
    calls: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    flops: int = 0
    flops_by_op: dict[str, int] = field(default_factory=dict)
    output: str | None = None
    result: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "parent": self.parent,
            "per_class": self.per_class,
            "calls": self.calls,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "flops": self.flops,
            "flops_by_op": dict(self.flops_by_op),
            "output": self.output,
        }


def attention_flop_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas of the fused attention kernels torch's counter does not know: the CPU
    flash-attention kernel behind ``scaled_dot_product_attention``, and the fast path of
    ``nn.MultiheadAttention`` (projections plus attention)."""
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    aten = torch.ops.aten

    def cpu_flash_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def native_multi_head_attention(
        query, key, value, embed_dim, num_heads, *args, out_shape=None, **kwargs
    ) -> int:
        batch, queries, width = query
        keys = key[-2]
        projections = 2 * batch * width * width * (2 * queries + 2 * keys)
        return projections + 4 * batch * queries * keys * width

    return {
        aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention,
        aten._native_multi_head_attention: native_multi_head_attention,
    }


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: every FLOP goes to "Global".

    The recorder attributes FLOPs to stages itself; the tracker's module hooks would only add
    time, and they fail on views of parameters taken under ``no_grad`` (OVSeg's query
    positions)."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def flop_counter() -> Any:
    """A fresh ``FlopCounterMode`` (no printing, no module tracking) that also knows the fused
    attention kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=attention_flop_formulas())
    counter.mod_tracker = _GlobalOnly()
    return counter


def device_synchronizer(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for a CUDA device (so stage times include the GPU work),
    None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return lambda: torch.cuda.synchronize(device)


class StageRecorder:
    """Exclusive time and FLOPs per named stage.

    Args:
        synchronize: called at every stage boundary (``device_synchronizer``).
        counter: makes a FLOP counter: a context manager with ``get_total_flops()`` and
            ``get_flop_counts()`` (default ``flop_counter``).
    """

    def __init__(
        self,
        synchronize: Callable[[], None] | None = None,
        counter: Callable[[], Any] = flop_counter,
    ) -> None:
        self.stages: dict[str, StageStats] = {}
        self._synchronize = synchronize or (lambda: None)
        self._counter = counter
        self._stack: list[StageStats] = []
        self._segment: tuple[Any, float, float] | None = None

    def _open(self) -> None:
        self._synchronize()
        counter = self._counter()
        counter.__enter__()
        self._segment = (counter, time.perf_counter(), time.process_time())

    def _close(self) -> None:
        self._synchronize()
        counter, wall, cpu = self._segment
        stats = self._stack[-1]
        stats.seconds += time.perf_counter() - wall
        stats.cpu_seconds += time.process_time() - cpu
        counter.__exit__(None, None, None)
        self._segment = None
        stats.flops += int(counter.get_total_flops())
        for op, flops in counter.get_flop_counts().get("Global", {}).items():
            stats.flops_by_op[str(op)] = stats.flops_by_op.get(str(op), 0) + int(flops)

    @contextlib.contextmanager
    def stage(self, name: str, per_class: bool = False) -> Iterator[StageStats]:
        """Count the block as (one more call of) stage ``name``, pausing the enclosing one."""
        stats = self.stages.get(name)
        if stats is None:
            parent = self._stack[-1].name if self._stack else None
            stats = self.stages[name] = StageStats(name, parent, per_class)
        stats.calls += 1
        if self._stack:
            self._close()
        self._stack.append(stats)
        self._open()
        try:
            yield stats
        finally:
            self._close()
            self._stack.pop()
            if self._stack:
                self._open()

    def _wrapped(self, function: Callable[..., Any], probe: Probe) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with self.stage(probe.stage, probe.per_class) as stats:
                result = function(*args, **kwargs)
            if stats.output is None:
                stats.output = describe(result)
            if probe.keep:
                stats.result = result
            return result

        return run

    @contextlib.contextmanager
    def probes(self, probes: Sequence[Probe]) -> Iterator[None]:
        """Wrap every probe's function for the block (restored afterwards)."""
        with contextlib.ExitStack() as stack:
            for probe in probes:
                original = getattr(probe.owner, probe.attribute)
                stack.enter_context(
                    patched(probe.owner, probe.attribute, self._wrapped(original, probe))
                )
            yield

    def rows(self) -> list[dict[str, Any]]:
        """The stages in first-call order, each followed by the stages nested in it."""
        children: dict[str | None, list[StageStats]] = {}
        for stats in self.stages.values():
            children.setdefault(stats.parent, []).append(stats)
        ordered: list[dict[str, Any]] = []

        def visit(parent: str | None, depth: int) -> None:
            for stats in children.get(parent, []):
                ordered.append({**stats.to_dict(), "depth": depth})
                visit(stats.name, depth + 1)

        visit(None, 1)
        return ordered

    def total_flops(self) -> int:
        return sum(stats.flops for stats in self.stages.values())

    def total_seconds(self) -> float:
        return sum(stats.seconds for stats in self.stages.values())


def doubled_vocabulary(vocabulary: Sequence[str]) -> list[str]:
    """``vocabulary`` followed by as many filler names (``filler_names``): the second run of
    an inspection, to measure how cost grows with the number of classes."""
    return [*vocabulary, *filler_names(vocabulary, len(vocabulary))]


def measure(
    device: str, probes: Sequence[Probe], stage: str, call: Callable[[], Any]
) -> tuple[StageRecorder, Any]:
    """Run ``call()`` once without autograd inside the per-class stage ``stage``, with
    ``probes`` on the stages it goes through; returns the recorder and ``call``'s result."""
    import torch

    recorder = StageRecorder(device_synchronizer(device))
    with torch.no_grad(), recorder.probes(probes), recorder.stage(stage, per_class=True):
        outcome = call()
    return recorder, outcome


def scaling(
    small: StageRecorder,
    large: StageRecorder,
    classes: tuple[int, int],
    note: str,
    replayed: Sequence[str] = (),
) -> dict[str, Any]:
    """How cost grows with the vocabulary: every stage measured with ``classes[0]`` and
    ``classes[1]`` names, and the per-class term ``(large - small) / (classes[1] - classes[0])``
    summed over the stages that grow with the vocabulary (declared ``per_class``, or whose
    FLOPs changed): the other stages' time differences are noise. The ``replayed`` stages
    (independent of the vocabulary) did not run the second time: their first figures stand
    for both."""
    rows = []
    for name in dict.fromkeys([*small.stages, *large.stages]):
        a = small.stages.get(name)
        b = a if name in replayed else large.stages.get(name)
        flops = [a.flops if a else 0, b.flops if b else 0]
        per_class = (a or b).per_class
        rows.append(
            {
                "stage": name,
                "per_class": per_class,
                "grows": per_class or flops[0] != flops[1],
                "replayed": name in replayed,
                "flops": flops,
                "seconds": [a.seconds if a else 0.0, b.seconds if b else 0.0],
                "calls": [a.calls if a else 0, b.calls if b else 0],
            }
        )
    added = classes[1] - classes[0]

    def growth(key: str) -> float:
        return sum(row[key][1] - row[key][0] for row in rows if row["grows"]) / added

    return {
        "classes": list(classes),
        "rows": rows,
        "total_flops": [sum(row["flops"][i] for row in rows) for i in (0, 1)],
        "total_seconds": [sum(row["seconds"][i] for row in rows) for i in (0, 1)],
        "flops_per_class": growth("flops"),
        "seconds_per_class": growth("seconds"),
        "note": note,
    }


def report(
    *,
    method: str,
    architecture: str,
    image: tuple[int, int],
    vocabulary: Sequence[str],
    parameters: dict[str, Any],
    training: dict[str, str],
    recorder: StageRecorder,
    shapes: list[dict[str, Any]],
    growth: dict[str, Any],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The result of an ``inspect`` request (the harness adds the load provenance).

    ``image`` is the input's ``(height, width)``; ``training`` has ``summary`` and ``source``:
    what the method trained and where that is stated.
    """
    return {
        "method": method,
        "architecture": architecture,
        "image": {"height": image[0], "width": image[1]},
        "vocabulary": list(vocabulary),
        "parameters": {**parameters, "training": dict(training)},
        "stages": recorder.rows(),
        "total_flops": recorder.total_flops(),
        "total_seconds": recorder.total_seconds(),
        "shapes": shapes,
        "scaling": growth,
        "notes": [FLOP_NOTE, TIME_NOTE, *notes],
    }
