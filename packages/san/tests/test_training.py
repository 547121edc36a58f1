"""SAN's trainer end to end on the tiny golden model: runs, checkpoints, resuming, several
processes, learning, and the one-line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovss_common.training import ERROR_FILE, METRICS_FILE, TrainingData, TrainRequest, read_error
from ovss_san.build import load_san
from ovss_san.predictor import SanPredictor
from ovss_san.training import __main__ as trainer_cli
from ovss_san.training.data import TrainingSet
from ovss_san.training.mapper import MapperConfig, SemanticTrainMapper
from ovss_san.training.step import TrainingStep

GOLDEN = Path(__file__).resolve().parent / "golden"
#: The classes of the two golden training samples (COCO-Stuff ids -> our training ids).
CLASSES = {
    0: "person",
    56: "chair",
    60: "dining table",
    15: "cat",
    89: "carpet",
    129: "pillow",
    161: "wall-other",
}


def _lookup() -> list[int]:
    table = [255] * 256
    for index, coco_id in enumerate(CLASSES):
        table[coco_id] = index
    return table


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[list[str]]:
    """The two images of the recorded training batch with their raw labels, as files."""
    folder = tmp_path_factory.mktemp("data")
    batch = np.load(GOLDEN / "train" / "batch.npz")
    files = []
    for index, case in enumerate(("voc_voc20", "chelsea_custom3")):
        image = np.load(GOLDEN / "cases" / f"{case}.npz")["image"]
        Image.fromarray(image).save(folder / f"{index}.png")
        Image.fromarray(batch[f"raw/{index}/label"]).save(folder / f"{index}_label.png")
        files.append([str(folder / f"{index}.png"), str(folder / f"{index}_label.png")])
    return files


def _pairs(overrides: dict[str, str]) -> list[str]:
    return [item for pair in overrides.items() for item in pair]


def _request(out: Path, samples, **settings) -> TrainRequest:
    settings.setdefault("log_period", 1)
    return TrainRequest(
        config=str(GOLDEN / "config_train.yaml"),
        weights=str(GOLDEN / "checkpoint.pth"),
        out=str(out),
        data=TrainingData(
            name="golden", classes=list(CLASSES.values()), samples=samples, label_lookup=_lookup()
        ),
        threads=2,
        **settings,
    )


def _train(request: TrainRequest) -> int:
    Path(request.out).mkdir(parents=True, exist_ok=True)
    return trainer_cli.main(["--request", str(request.write(Path(request.out)))])


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_a_run_writes_metrics_events_and_released_layout_checkpoints(tmp_path, samples):
    out = tmp_path / "run"
    assert _train(_request(out, samples, max_iter=3, checkpoint_period=2)) == 0
    lines = _metrics(out)
    assert [line["iteration"] for line in lines] == [1, 2, 3]
    for line in lines:
        assert {"iteration", "lr", "total_loss", "loss_ce", "loss_mask_0"} <= set(line)
        assert np.isfinite(line["total_loss"])
    assert lines[0]["lr"] == pytest.approx(1e-4)
    assert list(out.glob("events.out.tfevents.*"))
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert (out / "model_0000001.pth").is_file()
    model, _ = load_san(out / "config.yaml", out / "model_final.pth")
    trained = _weights(out / "model_final.pth")
    assert trained["criterion.empty_weight"][-1] == pytest.approx(0.1)
    initial = _weights(GOLDEN / "checkpoint.pth")
    moved = (
        trained["side_adapter_network.query_embed"] - initial["side_adapter_network.query_embed"]
    )
    assert float(moved.abs().max()) > 0
    frozen = "clip_rec_head.resblocks.0.attn.in_proj_weight"
    assert torch.equal(trained[frozen], initial[frozen])
    assert torch.equal(model.state_dict()[frozen], trained[frozen])


def _killed_at(iteration: int):
    """A ``TrainingStep.run`` that stops the process (as a kill would) when step
    ``iteration`` begins."""
    run = TrainingStep.run
    calls = []

    def stopping(step, batch, points):
        calls.append(1)
        if len(calls) == iteration:
            raise KeyboardInterrupt
        return run(step, batch, points)

    return stopping


def test_a_killed_run_resumed_equals_an_uninterrupted_one(tmp_path, samples, monkeypatch):
    settings = {"max_iter": 4, "checkpoint_period": 2}
    whole = tmp_path / "whole"
    assert _train(_request(whole, samples, **settings)) == 0
    broken = tmp_path / "broken"
    with monkeypatch.context() as patch:
        patch.setattr(TrainingStep, "run", _killed_at(3))
        assert _train(_request(broken, samples, **settings)) == 130
    assert "interrupted" in read_error(broken)
    assert (broken / "last_checkpoint").read_text() == "model_0000001.pth"
    assert _train(_request(broken, samples, resume=True, **settings)) == 0
    ours, theirs = _weights(broken / "model_final.pth"), _weights(whole / "model_final.pth")
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    resumed = [line for line in _metrics(broken) if line["iteration"] > 2]
    uninterrupted = [line for line in _metrics(whole) if line["iteration"] > 2]
    for a, b in zip(resumed, uninterrupted, strict=True):
        assert a["total_loss"] == b["total_loss"]


def test_resuming_with_another_config_is_refused_in_one_line(tmp_path, samples):
    out = tmp_path / "run"
    assert _train(_request(out, samples, max_iter=1)) == 0
    assert _train(_request(out, samples, max_iter=2, resume=True)) == 1
    message = read_error(out)
    assert "another config (SOLVER.MAX_ITER: 1 -> 2)" in message and "\n" not in message


def test_an_unknown_config_key_is_one_line(tmp_path, samples):
    out = tmp_path / "run"
    assert _train(_request(out, samples, max_iter=1, overrides=["MODEL.SAN.NO_SUCH", "1"])) == 1
    assert read_error(out) == "config key MODEL.SAN.NO_SUCH is not a SAN training key"


def test_a_missing_image_is_one_line(tmp_path, samples):
    out = tmp_path / "run"
    broken = [[str(tmp_path / "absent.png"), samples[0][1]]]
    assert _train(_request(out, broken, max_iter=1)) == 1
    message = read_error(out)
    assert "absent.png" in message and "\n" not in message
    assert not (out / "model_final.pth").exists()


def _square_samples(folder: Path) -> list[list[str]]:
    """Two 320x320 samples with three classes each (so both processes weigh their
    cross-entropy alike), used with the crop off."""
    rng = np.random.default_rng(0)
    files = []
    for index in range(2):
        image = rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)
        label = np.full((320, 320), 161, np.uint8)
        label[40:200, 30 + 20 * index : 180] = 0
        label[220:300, 100 : 300 - 10 * index] = 89
        Image.fromarray(image).save(folder / f"{index}.png")
        Image.fromarray(label).save(folder / f"{index}_label.png")
        files.append([str(folder / f"{index}.png"), str(folder / f"{index}_label.png")])
    return files


def test_two_processes_with_one_image_each_equal_one_process_with_two(tmp_path):
    """The two layouts sum the same gradients in a different order, so each gradient element
    differs by float rounding. AdamW's update is close to ``lr * sign(g)``: an element whose
    gradient nearly cancels can flip its update by ``2 * lr`` on rounding alone, so the
    comparison uses SGD (an update linear in the gradient), without clipping so that the
    parameters move far more than the tolerance."""
    files = _square_samples(tmp_path)
    overrides = _pairs(
        {
            "INPUT.CROP.ENABLED": "False",
            "INPUT.MIN_SIZE_TRAIN": "(320,)",
            "SOLVER.CLIP_GRADIENTS.ENABLED": "False",
            "SOLVER.OPTIMIZER": "SGD",
            "SOLVER.BASE_LR": "0.0001",
        }
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        out.mkdir()
        request = _request(out, files, max_iter=2, batch_size=2, overrides=overrides)
        request = TrainRequest(**{**request.__dict__, "threads": 1})
        path = request.write(out)
        command = [sys.executable, "-m", "ovss_san.training", "--request", str(path)]
        if processes == 2:
            launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
            command[1:1] = launcher
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[processes] = (_weights(out / "model_final.pth"), _metrics(out))
    (one, one_log), (two, two_log) = runs[1], runs[2]
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=0, atol=1e-6, msg=key)
    initial = _weights(GOLDEN / "checkpoint.pth")
    initial = initial.get("model", initial)
    moved = max(
        float((one[k] - initial[k]).abs().max())
        for k in one
        if k in initial and one[k].shape == initial[k].shape
    )
    assert moved > 1e-3
    for a, b in zip(one_log, two_log, strict=True):
        assert a["total_loss"] == pytest.approx(b["total_loss"], rel=1e-6)


def _miou(model, cfg, files, classes) -> float:
    predictor = SanPredictor(model.eval(), cfg)
    lookup = np.asarray(_lookup())
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    for image_path, label_path in files:
        truth = lookup[np.asarray(Image.open(label_path))]
        predicted = predictor.predict(np.asarray(Image.open(image_path)), classes).label_map
        valid = truth != 255
        np.add.at(confusion, (truth[valid], predicted[valid]), 1)
    present = confusion.sum(1) > 0
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    return float((np.diag(confusion)[present] / union[present]).mean())


def test_the_tiny_model_overfits_two_images(tmp_path, samples):
    """Without augmentation, 150 steps on two images lower the loss and raise their mIoU
    (measured at the training size: 0.05 before, about 0.3 after)."""
    out = tmp_path / "run"
    overrides = _pairs(
        {
            "SOLVER.BASE_LR": "0.001",
            "INPUT.CROP.ENABLED": "False",
            "INPUT.COLOR_AUG_SSD": "False",
            "INPUT.RANDOM_FLIP": "none",
            "INPUT.MIN_SIZE_TRAIN": "(320,)",
            "INPUT.SIZE_DIVISIBILITY": "-1",
        }
    )
    classes = list(CLASSES.values())
    at_train_size = ["INPUT.MIN_SIZE_TEST", "320"]
    initial = load_san(
        GOLDEN / "config_train.yaml", GOLDEN / "checkpoint.pth", overrides=at_train_size
    )
    before = _miou(*initial, samples, classes)
    assert _train(_request(out, samples, max_iter=150, log_period=10, overrides=overrides)) == 0
    losses = [line["total_loss"] for line in _metrics(out)]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    trained = load_san(out / "config.yaml", out / "model_final.pth", overrides=at_train_size)
    after = _miou(*trained, samples, classes)
    assert after > before + 0.15, (before, after)
    assert not (out / ERROR_FILE).exists()


def test_out_of_memory_names_the_batch_that_fits(tmp_path, samples, monkeypatch):
    """A step that does not fit is retried with fewer images to say which batch does."""
    backward = TrainingStep.backward

    def limited(step, batch, points):
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return backward(step, batch, points)

    monkeypatch.setattr(TrainingStep, "backward", limited)
    out = tmp_path / "run"
    assert _train(_request(out, samples, max_iter=2)) == 1
    assert read_error(out) == (
        "out of memory on cpu with 2 images per process; 1 per process fits: pass --batch-size 1"
    )


def test_a_partial_checkpoint_left_by_a_kill_does_not_stop_a_resume(tmp_path, samples):
    out = tmp_path / "run"
    settings = {"max_iter": 3, "checkpoint_period": 1}
    assert _train(_request(out, samples, **settings)) == 0
    (out / "last_checkpoint").write_text("model_0000001.pth")
    (out / ".model_final.pth.partial").write_bytes(b"cut short")
    assert _train(_request(out, samples, resume=True, **settings)) == 0
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert [line["iteration"] for line in _metrics(out)] == [1, 2, 3]


def test_without_weights_the_recipe_needs_openais_clip(tmp_path, samples):
    """The tiny CLIP is not one of OpenAI's, so training it from the recipe's start is refused."""
    out = tmp_path / "run"
    request = dataclasses.replace(_request(out, samples, max_iter=1), weights=None)
    assert _train(request) == 1
    assert "no initial weights" in read_error(out) and "pass --weights" in read_error(out)


def test_a_users_ignore_value_is_not_trained_on(tmp_path):
    """A registered dataset may mark unlabelled pixels with another value than 255."""
    folder = tmp_path / "data"
    folder.mkdir()
    image = np.zeros((320, 320, 3), np.uint8)
    label = np.zeros((320, 320), np.uint8)
    label[:, 160:] = 1
    label[:40] = 7
    Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(label).save(folder / "a_label.png")
    data = TrainingData(
        name="mine",
        classes=["road", "car"],
        samples=[[str(folder / "a.png"), str(folder / "a_label.png")]],
        ignore_label=7,
    )
    cfg = load_san(GOLDEN / "config_train.yaml", None)[1]
    mapper = SemanticTrainMapper(MapperConfig.from_cfg(cfg))
    image, label = TrainingSet(data, mapper, 0, 2).read(0)
    assert set(np.unique(label)) == {0, 1, 255}


def test_a_bad_label_read_by_a_loader_worker_is_one_line_naming_it(tmp_path, samples):
    out = tmp_path / "run"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    request = _request(
        out,
        [[samples[0][0], str(broken)]],
        max_iter=1,
        overrides=["DATALOADER.NUM_WORKERS", "1"],
    )
    assert _train(request) == 1
    message = read_error(out)
    assert message.startswith(f"label {broken}: unreadable") and "\n" not in message


def test_resuming_with_another_checkpoint_period_is_allowed(tmp_path, samples):
    out = tmp_path / "run"
    assert _train(_request(out, samples, max_iter=2, checkpoint_period=1)) == 0
    (out / "last_checkpoint").write_text("model_0000000.pth")
    assert _train(_request(out, samples, max_iter=2, checkpoint_period=5, resume=True)) == 0
    assert [line["iteration"] for line in _metrics(out)] == [1, 2]
