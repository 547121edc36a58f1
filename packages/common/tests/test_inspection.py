"""ovss_common.inspection without torch: parameter rows, exclusive stage accounting, probes,
scaling, shape descriptions (a fake FLOP counter stands in for torch's)."""

from __future__ import annotations

import types
from typing import ClassVar

import numpy as np
import pytest

from ovss_common import inspection
from ovss_common.inspection import (
    Probe,
    StageRecorder,
    describe,
    filler_names,
    parameter_rows,
    patched,
    scaling,
)


class FakeParameter:
    def __init__(self, count: int) -> None:
        self.count = count

    def numel(self) -> int:
        return self.count


class FakeModel:
    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes

    def named_parameters(self):
        return ((name, FakeParameter(count)) for name, count in self.sizes.items())


class FakeCounter:
    """Counts one FLOP per ``work`` unit done while it is entered."""

    active: ClassVar[list[FakeCounter]] = []

    def __init__(self) -> None:
        self.flops = 0

    def __enter__(self) -> FakeCounter:
        FakeCounter.active.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        FakeCounter.active.remove(self)

    def get_total_flops(self) -> int:
        return self.flops

    def get_flop_counts(self) -> dict:
        return {"Global": {"aten.mm": self.flops}} if self.flops else {}


def work(units: int) -> int:
    for counter in FakeCounter.active:
        counter.flops += units
    return units


def test_parameter_rows_add_up_and_split_trained_from_frozen():
    model = FakeModel(
        {
            "backbone.stem.weight": 10,
            "backbone.blocks.0.weight": 20,
            "backbone.blocks.1.weight": 30,
            "head.query": 5,
            "clip.visual.proj": 7,
            "clip.text.proj": 3,
        }
    )
    table = parameter_rows(
        model, lambda name: not name.startswith("clip.text"), deeper=("clip.visual",)
    )
    assert (table["total"], table["trainable"], table["frozen"]) == (75, 72, 3)
    rows = {row["module"]: row for row in table["rows"]}
    assert sum(row["total"] for row in table["rows"] if row["depth"] == 1) == 75
    assert rows["backbone.blocks"]["total"] == 50
    assert "backbone.blocks.0" not in rows
    assert rows["clip.text"] == {
        "module": "clip.text",
        "depth": 2,
        "total": 3,
        "trainable": 0,
        "frozen": 3,
    }
    assert rows["clip.visual.proj"]["depth"] == 3
    order = [row["module"] for row in table["rows"]]
    assert order.index("backbone") < order.index("backbone.stem") < order.index("head")


def test_stages_are_exclusive_and_nested():
    recorder = StageRecorder(counter=FakeCounter)
    with recorder.stage("outer"):
        work(5)
        with recorder.stage("inner", per_class=True):
            work(7)
        work(1)
        with recorder.stage("inner", per_class=True):
            work(7)
    stages = recorder.stages
    assert (stages["outer"].flops, stages["inner"].flops) == (6, 14)
    assert (stages["outer"].calls, stages["inner"].calls) == (1, 2)
    assert stages["inner"].parent == "outer"
    assert recorder.total_flops() == 20
    assert stages["inner"].flops_by_op == {"aten.mm": 14}
    assert [(row["stage"], row["depth"]) for row in recorder.rows()] == [
        ("outer", 1),
        ("inner", 2),
    ]
    assert not FakeCounter.active


def test_a_failing_stage_still_closes_its_counter():
    recorder = StageRecorder(counter=FakeCounter)
    with pytest.raises(RuntimeError), recorder.stage("outer"), recorder.stage("inner"):
        raise RuntimeError("boom")
    assert not FakeCounter.active
    assert recorder.stages["inner"].calls == 1


class Pipeline:
    def step(self, units: int) -> np.ndarray:
        work(units)
        return np.zeros((units, 2))

    @staticmethod
    def combine(units: int) -> int:
        return work(units)


def test_probes_wrap_methods_for_the_block_only():
    pipeline = Pipeline()
    module = types.SimpleNamespace(helper=lambda units: work(units))
    recorder = StageRecorder(counter=FakeCounter)
    probes = [
        Probe(pipeline, "step", "step", keep=True),
        Probe(Pipeline, "combine", "combine"),
        Probe(module, "helper", "helper"),
    ]
    with recorder.probes(probes), recorder.stage("run"):
        pipeline.step(3)
        Pipeline.combine(4)
        pipeline.combine(2)
        module.helper(1)
    assert "step" not in vars(pipeline)
    assert isinstance(vars(Pipeline)["combine"], staticmethod)
    stages = recorder.stages
    assert stages["step"].output == "[3, 2]"
    assert stages["step"].result.shape == (3, 2)
    assert (stages["combine"].calls, stages["combine"].flops) == (2, 6)
    assert stages["helper"].flops == 1
    assert stages["run"].flops == 0


def test_patched_restores_what_was_there():
    owner = types.SimpleNamespace(value=1)
    with patched(owner, "value", 2):
        assert owner.value == 2
    assert owner.value == 1


def test_scaling_per_class_term_and_replayed_stages():
    small, large = StageRecorder(counter=FakeCounter), StageRecorder(counter=FakeCounter)
    for recorder, classes in ((small, 2), (large, 4)):
        with recorder.stage("image tower"):
            work(100)
        with recorder.stage("text", per_class=True):
            work(10 * classes)
    with small.stage("proposals"):
        work(50)
    growth = scaling(small, large, (2, 4), "note", replayed=["proposals"])
    rows = {row["stage"]: row for row in growth["rows"]}
    assert rows["proposals"]["flops"] == [50, 50] and rows["proposals"]["replayed"]
    assert not rows["image tower"]["grows"] and rows["text"]["grows"]
    assert growth["total_flops"] == [170, 190]
    assert growth["flops_per_class"] == 10


def test_describe_shapes():
    assert describe(np.zeros((2, 3))) == "[2, 3]"
    assert describe([np.zeros((1, 4))] * 3) == "3 x [1, 4]"
    assert describe((np.zeros(2), np.zeros((1, 1)))) == "([2], [1, 1])"
    assert describe({"a": 1}) is None


def test_filler_names_avoid_the_vocabulary():
    names = filler_names(["person", "cat"], 5)
    assert len(names) == 5 and not {"person", "cat"} & set(names)
    assert names[0] == "aeroplane"
    with pytest.raises(ValueError):
        filler_names([], 10_000)


def test_the_module_imports_without_torch():
    assert "torch" not in vars(inspection)
