"""``ovss sweep`` on an embedded two-slot Ray on 127.0.0.1: equality with ``ovss eval``, resume."""

from __future__ import annotations

import json
import os

import pytest
from test_methods import san

from ovss.cli import main
from ovss.datasets.mini_voc import STEMS
from ovss.errors import OvssError
from ovss.runner import EvalSettings, run_eval
from ovss.sweep import SweepSettings, init_ray, run_sweep, shard_stems
from ovss.worker import ModelSettings, model_settings
from ovss_common.protocol import LoadRequest

TABLE_KEYS = ("mIoU", "fwIoU", "mACC", "pACC", "per_class", "num_images", "label_space")


@pytest.fixture(scope="module")
def ray_session():
    """One embedded Ray (2 CPU slots, loopback, no dashboard) for the whole module."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    init_ray(2)
    import ray

    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    yield ray
    ray.shutdown()


def _toy() -> ModelSettings:
    return ModelSettings(method="toy", load=LoadRequest())


def _stamps(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / "confusion").iterdir()}


def test_shards_are_sorted_contiguous_and_drop_nothing():
    stems = [f"s{i}" for i in (4, 2, 0, 3, 1)]
    assert shard_stems(stems, 2) == [["s0", "s1", "s2"], ["s3", "s4"]]
    assert shard_stems(stems, 3) == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert shard_stems(["s0"], 4) == [["s0"]]
    for shards in range(1, 8):
        assert [s for part in shard_stems(stems, shards) for s in part] == sorted(stems)


@san
def test_san_sweep_table_equals_eval_and_a_rerun_does_nothing(ray_session, tmp_path):
    # Same threads in both: a thread count may change float results in ignored pixels.
    model = model_settings("san", tiny=True, device="cpu", threads=1)
    expected = run_eval(EvalSettings(model=model, dataset="mini-voc", out=tmp_path / "eval"))
    settings = SweepSettings(
        models=[model_settings("san", tiny=True, device="cpu", threads=1)],
        datasets=["mini-voc"],
        out=tmp_path / "sweep",
        workers=2,
    )
    summary = run_sweep(settings)
    folder = tmp_path / "sweep" / "mini-voc" / "san"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {k: metrics[k] for k in TABLE_KEYS} == {k: expected[k] for k in TABLE_KEYS}
    assert metrics["num_failed"] == 0 and metrics["num_predicted_now"] == len(STEMS)
    assert len(summary["tasks"]) == 2 and summary["results"][0]["mIoU"] == expected["mIoU"]
    assert (folder / "sem_seg_predictions.json").read_text() == (
        tmp_path / "eval" / "sem_seg_predictions.json"
    ).read_text()
    stamps = _stamps(folder)
    again = run_sweep(settings)
    assert again["results"][0]["num_predicted_now"] == 0
    assert all(task["predicted"] == 0 for task in again["tasks"])
    assert _stamps(folder) == stamps and again["results"][0]["mIoU"] == expected["mIoU"]


def test_killed_tasks_lose_nothing_and_a_rerun_completes(ray_session, tmp_path, capsys):
    expected = run_eval(EvalSettings(model=_toy(), dataset="mini-voc", out=tmp_path / "eval"))
    out = tmp_path / "sweep"
    folder = out / "mini-voc" / "toy"
    # Each of the 2 tasks dies (its process exits) after its first image; no retries.
    killed = run_sweep(
        SweepSettings(models=[_toy()], datasets=["mini-voc"], out=out, kill_after=1, max_retries=0)
    )
    assert all("error" in task for task in killed["tasks"]) and len(killed["tasks"]) == 2
    partial = json.loads((folder / "metrics.json").read_text())
    assert partial["num_images"] == 2 and partial["num_failed"] == 2
    stamps = _stamps(folder)
    assert len(stamps) == 2
    # The same sweep again (through the CLI) predicts only the two unfinished images.
    code = main(["sweep", "--methods", "toy", "--datasets", "mini-voc", "--out", str(out)])
    assert code == 0 and "| toy | mini-voc |" in capsys.readouterr().out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["num_predicted_now"] == 2 and metrics["num_failed"] == 0
    assert {k: metrics[k] for k in TABLE_KEYS} == {k: expected[k] for k in TABLE_KEYS}
    assert {n: t for n, t in _stamps(folder).items() if n in stamps} == stamps
    assert not (folder / "failures.jsonl").exists()


def test_ray_retries_a_killed_task_with_only_its_unfinished_images(ray_session, tmp_path):
    expected = run_eval(EvalSettings(model=_toy(), dataset="mini-voc", out=tmp_path / "eval"))
    summary = run_sweep(
        SweepSettings(
            models=[_toy()],
            datasets=["mini-voc"],
            out=tmp_path / "sweep",
            shards=1,
            kill_after=1,
            max_retries=3,
        )
    )
    row = summary["results"][0]
    assert row["num_images"] == len(STEMS) and row["num_failed"] == 0
    assert row["mIoU"] == expected["mIoU"]
    # One attempt per image: every retry resumed where the killed one stopped.
    assert summary["tasks"][0]["predicted"] == 1


def test_sweep_refuses_a_folder_of_another_run(ray_session, tmp_path):
    out = tmp_path / "sweep"
    run_sweep(SweepSettings(models=[_toy()], datasets=["mini-voc"], out=out, limit=1))
    other = ModelSettings(method="toy", load=LoadRequest(options={"unassigned_below": 10}))
    code = main(
        ["sweep", "--methods", "toy", "--datasets", "mini-voc", "--out", str(out), "--limit", "1"]
    )
    assert code == 0
    with pytest.raises(OvssError, match="differs in options"):
        run_sweep(SweepSettings(models=[other], datasets=["mini-voc"], out=out, limit=1))
