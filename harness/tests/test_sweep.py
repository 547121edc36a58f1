"""``ovss sweep`` on an embedded two-slot Ray on 127.0.0.1: equality with ``ovss eval``, resume,
checkpoints, progress bars and the dashboard link."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from test_methods import san

from ovss.checkpoints import SweepModel, parse_checkpoints, sweep_models
from ovss.cli import build_parser, main
from ovss.datasets.mini_voc import STEMS
from ovss.engine import EvalSettings
from ovss.errors import OvssError
from ovss.ray_cluster import init_ray, task_resources
from ovss.reproduce import Scale, Target, official_model, run_reproduction, targets_of
from ovss.runner import run_eval
from ovss.sweep import FORWARDED_ENV, SweepSettings, run_sweep, shard_stems
from ovss.worker import ModelSettings, model_settings, worker_environment
from ovss_common.hashing import sha256_file
from ovss_common.protocol import LoadRequest

TABLE_KEYS = ("mIoU", "fwIoU", "mACC", "pACC", "per_class", "num_images", "label_space")


@pytest.fixture(scope="module")
def _ray_module():
    """Shut the module's embedded Ray down after its last test."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_session(_ray_module):
    """An embedded Ray (2 CPU slots, loopback, no dashboard), started once and restarted for
    any test that finds it stopped, whatever order the tests run in."""
    import ray

    if not ray.is_initialized():
        init_ray(2)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    return ray


def _toy() -> ModelSettings:
    return ModelSettings(method="toy", load=LoadRequest())


def _kill_tasks_after(images: int | None) -> None:
    """Make each toy worker kill its sweep task after ``images`` images (None: no fault)."""
    faults = Path(os.environ["OVSS_CONFIG_DIR"]) / "toy-faults.json"
    if images is None:
        faults.unlink(missing_ok=True)
        return
    faults.parent.mkdir(parents=True, exist_ok=True)
    faults.write_text(json.dumps({"kill_parent_after": images}))


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
        models=[SweepModel(model_settings("san", tiny=True, device="cpu", threads=1))],
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
    # Each of the 2 tasks dies (its process is killed) after its first image; no retries.
    _kill_tasks_after(1)
    killed = run_sweep(
        SweepSettings(models=[SweepModel(_toy())], datasets=["mini-voc"], out=out, max_retries=0)
    )
    _kill_tasks_after(None)
    assert all("error" in task for task in killed["tasks"]) and len(killed["tasks"]) == 2
    partial = json.loads((folder / "metrics.json").read_text())
    assert partial["num_images"] == 2 and partial["num_failed"] == 2
    stamps = _stamps(folder)
    assert len(stamps) == 2
    # The same sweep again (through the CLI) predicts only the two unfinished images.
    code = main(["sweep", "--methods", "toy", "--datasets", "mini-voc", "--out", str(out)])
    assert code == 0 and "| toy | default | mini-voc |" in capsys.readouterr().out
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["num_predicted_now"] == 2 and metrics["num_failed"] == 0
    assert {k: metrics[k] for k in TABLE_KEYS} == {k: expected[k] for k in TABLE_KEYS}
    assert {n: t for n, t in _stamps(folder).items() if n in stamps} == stamps
    assert not (folder / "failures.jsonl").exists()


def test_ray_retries_a_killed_task_with_only_its_unfinished_images(ray_session, tmp_path):
    expected = run_eval(EvalSettings(model=_toy(), dataset="mini-voc", out=tmp_path / "eval"))
    _kill_tasks_after(1)
    summary = run_sweep(
        SweepSettings(
            models=[SweepModel(_toy())],
            datasets=["mini-voc"],
            out=tmp_path / "sweep",
            shards=1,
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
    run_sweep(SweepSettings(models=[SweepModel(_toy())], datasets=["mini-voc"], out=out, limit=1))
    other = SweepModel(
        ModelSettings(method="toy", load=LoadRequest(options={"unassigned_below": 10}))
    )
    code = main(
        ["sweep", "--methods", "toy", "--datasets", "mini-voc", "--out", str(out), "--limit", "1"]
    )
    assert code == 0
    with pytest.raises(OvssError, match="differs in options"):
        run_sweep(SweepSettings(models=[other], datasets=["mini-voc"], out=out, limit=1))


def test_checkpoints_syntax_and_one_line_errors_before_ray(tmp_path, capsys):
    weights = tmp_path / "ft.pth"
    weights.write_text("{}")
    parsed = parse_checkpoints(
        ["san=san_vit_b_16, san_vit_large_14", f"san=san_vit_large_14:{weights}"], ["san", "car"]
    )
    assert [(c.label, c.model, c.weights) for c in parsed["san"]] == [
        ("san_vit_b_16", "san_vit_b_16", None),
        ("san_vit_large_14", "san_vit_large_14", None),
        ("ft", "san_vit_large_14", str(weights)),
    ]
    models = sweep_models(["san", "car"], parsed, device="cpu")
    assert [m.folder for m in models] == [
        "san@san_vit_b_16",
        "san@san_vit_large_14",
        "san@ft",
        "car",
    ]
    assert models[2].settings.load.options == {"model": "san_vit_large_14"}
    assert models[2].settings.load.weights == str(weights)
    errors = {
        "san": "expected METHOD=CHECKPOINT",
        "san=": "no checkpoint given for san",
        "nope=x": "unknown method 'nope'",
        "ovseg=x": "ovseg is not in --methods",
        "san=x,x": "two checkpoints of san are labelled 'x'",
        f"san={tmp_path / 'missing.pth'}": "missing.pth does not exist",
        "san=san_vit_b_16:": "san: empty path",
    }
    for value, message in errors.items():
        with pytest.raises(OvssError, match=message):
            parse_checkpoints([value], ["san", "car"])
    with pytest.raises(OvssError, match="--tiny takes paths to tiny checkpoints"):
        sweep_models(["san"], parse_checkpoints(["san=san_vit_b_16"], ["san"]), tiny=True)
    tiny = sweep_models(["san"], parse_checkpoints([f"san={weights}"], ["san"]), tiny=True)[0]
    assert tiny.settings.untrained and tiny.settings.load.weights == str(weights)
    flags = ["sweep", "--datasets", "x", "--checkpoints", "san=a", "--checkpoints", "car=b,c"]
    assert build_parser().parse_args(flags).checkpoints == ["san=a", "car=b,c"]
    missing = str(tmp_path / "missing.json")
    argv = ["sweep", "--methods", "toy", "--datasets", "mini-voc", "--checkpoints"]
    assert main([*argv, f"toy={missing}", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"ovss: error: --checkpoints: toy: {missing} does not exist\n"


def test_a_released_checkpoint_loads_as_reproduce_loads_it():
    for target in [t for method in ("san", "ovseg", "car") for t in targets_of(method)]:
        checkpoints = parse_checkpoints([f"{target.method}={target.model}"], [target.method])
        (model,) = sweep_models([target.method], checkpoints, device="cuda")
        assert model.folder == target.folder_name
        assert model.settings.load == official_model(target, device="cuda").load


def test_a_task_gets_one_gpu_where_there_are_gpus_and_its_worker_sees_it(monkeypatch):
    assert task_resources({"CPU": 16.0, "GPU": 8.0}) == {"num_gpus": 1, "num_cpus": 0}
    assert task_resources({"CPU": 16.0, "GPU": 8.0}, "cpu") == {"num_cpus": 1}
    assert task_resources({"CPU": 2.0}) == {"num_cpus": 1}
    # Ray sets CUDA_VISIBLE_DEVICES in a GPU task's process; the method worker inherits it.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert worker_environment()["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in FORWARDED_ENV


def test_each_checkpoint_gets_its_folder_and_a_broken_one_fails_in_one_line(
    ray_session, tmp_path, capsys
):
    first, broken = tmp_path / "first.json", tmp_path / "broken.json"
    first.write_text("{}")
    broken.write_text("not json")
    out = tmp_path / "sweep"
    argv = ["sweep", "--methods", "toy", "--datasets", "mini-voc", "--limit", "2", "--shards", "1"]
    code = main(
        [*argv, "--checkpoints", f"toy={first},{broken}", "--no-dashboard", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "| toy | first | mini-voc |" in captured.out
    assert "| toy | broken | mini-voc |" in captured.out
    run = json.loads((out / "mini-voc" / "toy@first" / "run.json").read_text())
    assert run["cache_key"]["weights_sha256"] == sha256_file(first)
    failed = [
        line for line in captured.err.splitlines() if "toy@broken/mini-voc/shard1of1:" in line
    ]
    assert len(failed) == 1 and failed[0].endswith("not a toy checkpoint"), failed
    tasks = json.loads((out / "sweep.json").read_text())["tasks"]
    assert [task.get("load_failed", False) for task in tasks].count(True) == 1
    metrics = json.loads((out / "mini-voc" / "toy@broken" / "metrics.json").read_text())
    assert metrics["num_failed"] == 2
    table = json.loads((out / "sweep.json").read_text())["results"]
    assert [(row["checkpoint"], row["num_failed"]) for row in table] == [
        ("first", 0),
        ("broken", 2),
    ]


def test_reproduce_as_a_sweep_shares_its_folder_with_the_sequential_run(
    toy_package, ray_session, tmp_path
):
    target = Target(
        method="toy",
        setting="Toy",
        model="bright",
        benchmark="VOC-21",
        dataset="mini-voc",
        published=50.0,
        source="a test",
        definition="d2-v0.6",
    )
    out = tmp_path / "repro"
    (swept,) = run_reproduction([target], lambda t: _toy(), out, scale=Scale(workers=2))
    assert swept.status == "measured" and swept.folder == str(out / "mini-voc" / "toy@bright")
    sequential = run_eval(EvalSettings(model=_toy(), dataset="mini-voc", out=tmp_path / "eval"))
    assert swept.measured == sequential["mIoU"]
    (resumed,) = run_reproduction([target], lambda t: _toy(), out)
    run = json.loads((out / "mini-voc" / "toy@bright" / "metrics.json").read_text())
    assert run["num_predicted_now"] == 0 and resumed.measured == swept.measured

    broken = ModelSettings(method="toy", load=LoadRequest(weights=str(tmp_path / "absent.json")))
    other = dataclasses.replace(target, model="broken")
    (row,) = run_reproduction([other], lambda t: broken, out, scale=Scale(workers=2))
    assert row.status.startswith("not run: load failed (bad_checkpoint)"), row.status


def test_progress_bars_are_drawn_by_the_driver(ray_session, tmp_path, capsys):
    settings = SweepSettings(
        models=[SweepModel(_toy())],
        datasets=["mini-voc"],
        out=tmp_path,
        limit=2,
        shards=1,
        progress_bars=True,
    )
    assert run_sweep(settings)["results"][0]["num_failed"] == 0
    err = ""
    deadline = time.monotonic() + 20  # bar updates reach the driver through Ray's log stream
    while "100%" not in err and time.monotonic() < deadline:
        time.sleep(0.5)
        err += capsys.readouterr().err
    assert "toy/mini-voc/shard1of1: 100%" in err and " done\n" not in err


def test_an_embedded_sweep_prints_its_dashboard_link(_ray_module, tmp_path, capsys):
    """Starts its own Ray with the dashboard (a running one is shut down first)."""
    import ray

    ray.shutdown()
    out = tmp_path / "sweep"
    argv = ["sweep", "--methods", "toy", "--datasets", "mini-voc", "--limit", "1", "--shards", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    links = [
        line.removeprefix("ovss: Ray dashboard at ")
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("ovss: Ray dashboard at ")
    ]
    assert len(links) == 1 and links[0].startswith("http://127.0.0.1:"), links
    assert json.loads((out / "sweep.json").read_text())["dashboard"] == links[0]
