"""``ovss train``: the request the harness writes, how it starts a trainer, and how it fails.

The trainer is the toy package's (``ovss_toy.train``, pure numpy): it follows the contract of
``ovss_common.training`` and runs the harness's evaluation command at the end.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TOY_PROJECT
from PIL import Image

from ovss import train as train_module
from ovss.cli import main
from ovss.datasets import LabelSpace, get_dataset, get_label_space, register_dataset
from ovss.errors import OvssError
from ovss.train import Distributed, LauncherOutput, label_lookup, launch_command, training_data
from ovss_common.training import ERROR_FILE, REQUEST_FILE, TrainRequest


def _request(out: Path) -> TrainRequest:
    return TrainRequest.read(out / REQUEST_FILE)


def _iterations(out: Path) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if "total_loss" in line]


def _one_line_error(err: str) -> str:
    """The error of a failed command's stderr, checked to be its one error line, last, and
    without a traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("ovss: error:")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    return lines[0].removeprefix("ovss: error: ")


def _method_dir(tmp_path: Path, name: str, facts: str) -> Path:
    """A method package that is only a pyproject (its environment is never built)."""
    project = tmp_path / name
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1.0"\n\n'
        f'[tool.ovss.method]\nname = "{name}"\nworker = "{name}.worker"\n{facts}'
    )
    return project


def _user_dataset(tmp_path: Path, broken: bool = False) -> tuple[Path, Path]:
    """A registered user dataset ``mine`` of two images, one label unreadable if ``broken``."""
    images, labels = tmp_path / "mine" / "images", tmp_path / "mine" / "labels"
    for folder in (images, labels):
        folder.mkdir(parents=True)
    for stem in ("a", "b"):
        Image.fromarray(np.full((4, 4, 3), 100, np.uint8)).save(images / f"{stem}.jpg")
        label = np.array([[0, 1, 1, 255]] * 4, np.uint8)
        Image.fromarray(label).save(labels / f"{stem}.png")
    if broken:
        (labels / "b.png").write_bytes(b"not a png")
    register_dataset("mine", images, labels, ["road", "car"], 255)
    return images, labels


def test_the_request_holds_split_classes_samples_overrides_and_eval_command(
    toy_package, tmp_path, capfd
):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--method",
            "toy",
            "--dataset",
            "mini-voc",
            "--max-iter",
            "3",
            "--batch-size",
            "2",
            "--opts",
            "SOLVER.BASE_LR",
            "0.5",
            "MODEL.X",
            "-1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--amp",
            "bf16",
            "--seed",
            "7",
            "--out",
            str(out),
        ]
    )
    captured = capfd.readouterr()
    assert code == 0, captured.err
    request = _request(out)
    assert request.config == "toy_small"  # the registry's default model
    assert request.weights is None and request.out == str(out.resolve())
    assert request.data.name == "mini-voc"
    assert request.data.classes == get_label_space("voc-21").class_names
    assert request.data.label_lookup is None and request.data.ignore_label == 255
    samples = get_dataset("mini-voc").samples()
    assert request.data.samples == [[str(s.image), str(s.label)] for s in samples]
    assert request.overrides == ["SOLVER.BASE_LR", "0.5", "MODEL.X", "-1"]
    assert (request.max_iter, request.batch_size, request.seed) == (3, 2, 7)
    assert (request.device, request.amp, request.threads, request.resume) == (
        "cpu",
        "bf16",
        1,
        False,
    )
    assert request.evaluation.period == 0 and request.evaluation.datasets == ["mini-voc"]
    assert request.evaluation.command["mini-voc"] == [
        sys.executable,
        "-m",
        "ovss.cli",
        "eval",
        "--method",
        "toy",
        "--dataset",
        "mini-voc",
        "--config",
        "{config}",
        "--weights",
        "{weights}",
        "--out",
        "{out}",
        "--restart",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    # the trainer ran: its metrics, checkpoints and the evaluation it started with that command
    assert _iterations(out) == [1, 2, 3] and (out / "model_final.pth").is_file()
    metrics = json.loads((out / "eval" / "3" / "mini-voc" / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    assert "mini-voc has no train split: training on its val split" in captured.err
    assert "toy: iteration 3/3" in captured.err  # the trainer's progress reaches the terminal
    assert f"toy trained on mini-voc -> {out.resolve()}" in captured.out
    assert f"mini-voc at iteration 3: mIoU {metrics['mIoU']:.2f}" in captured.out


def test_config_weights_tiny_and_eval_choices(toy_package, tmp_path, capfd):
    base = ["train", "--method", "toy", "--dataset", "mini-voc", "--device", "cpu"]
    weights = tmp_path / "start.json"
    weights.write_text('{"toy_iteration": 0}')
    out = tmp_path / "named"
    args = ["--config", "toy_large", "--weights", str(weights), "--no-eval", "--max-iter", "1"]
    assert main([*base, *args, "--out", str(out)]) == 0
    request = _request(out)
    assert (request.config, request.weights, request.evaluation) == (
        "toy_large",
        str(weights.resolve()),
        None,
    )
    config = tmp_path / "my.yaml"
    config.write_text("toy: 1\n")
    out = tmp_path / "file"
    args = ["--config", str(config), "--eval-period", "2", "--eval-datasets", "mini-voc"]
    assert main([*base, *args, "--out", str(out), "--max-iter", "2"]) == 0
    request = _request(out)
    assert request.config == str(config.resolve()) and request.evaluation.period == 2
    out = tmp_path / "tiny"
    assert main([*base, "--tiny", "--no-eval", "--out", str(out), "--max-iter", "1"]) == 0
    request = _request(out)
    assert request.config == str(TOY_PROJECT / "fixtures" / "train.json")
    assert request.weights == str(TOY_PROJECT / "fixtures" / "weights.json")
    assert "untrained tiny training fixture" in capfd.readouterr().err


def test_classes_and_lookup_follow_the_methods_label_space(toy_package):
    voc20 = dataclasses.replace(toy_package, label_spaces={"mini-voc": "voc-20"})
    data = training_data(voc20, get_dataset("mini-voc"), "val")
    assert data.classes == get_label_space("voc-20").class_names and len(data.classes) == 20
    lookup = data.label_lookup
    assert len(lookup) == 256 and data.ignore_label == 255
    assert (lookup[0], lookup[1], lookup[20], lookup[21], lookup[255]) == (255, 0, 19, 255, 255)
    # a class the method has no name for is not trained on; the others keep their order
    space = LabelSpace("t", ["a", "b", "c"], {"toy": ["a", None, "c"]}, ignore_label=255)
    names, ids = space.vocabulary("toy")
    assert names == ["a", "c"]
    assert label_lookup(space, ids)[:4] == [0, 255, 1, 255]
    assert label_lookup(get_label_space("ade20k-847"), np.arange(847)) is None
    wide = LabelSpace("w", [f"c{i}" for i in range(300)], {}, ignore_label=65535, drop_first=True)
    with pytest.raises(OvssError, match="more than 256"):
        label_lookup(wide, np.arange(300))


def test_a_user_dataset_trains_on_its_own_classes(toy_package, tmp_path, capfd):
    _user_dataset(tmp_path)
    out = tmp_path / "run"
    args = ["--dataset", "mine", "--device", "cpu", "--max-iter", "1", "--out", str(out)]
    assert main(["train", "--method", "toy", *args]) == 0
    request = _request(out)
    assert request.data.classes == ["road", "car"] and request.data.label_lookup is None
    assert [Path(image).name for image, _ in request.data.samples] == ["a.jpg", "b.jpg"]
    assert (out / "eval" / "1" / "mine" / "metrics.json").is_file()


def test_trainer_error_json_is_the_one_line(toy_package, tmp_path, capfd):
    _user_dataset(tmp_path, broken=True)
    out = tmp_path / "run"
    args = ["--dataset", "mine", "--device", "cpu", "--out", str(out)]
    assert main(["train", "--method", "toy", *args]) == 2
    message = _one_line_error(capfd.readouterr().err)
    assert message.startswith(f"{tmp_path / 'mine' / 'labels' / 'b.png'}: unreadable label")
    assert json.loads((out / ERROR_FILE).read_text())["message"] == message


def test_a_trainer_that_stops_without_error_json(toy_package, tmp_path, capfd):
    out = tmp_path / "run"
    args = ["--dataset", "mini-voc", "--device", "cpu", "--opts", "crash_at", "2"]
    assert main(["train", "--method", "toy", *args, "--out", str(out)]) == 2
    assert _one_line_error(capfd.readouterr().err) == (
        "the toy trainer stopped (exit status 3) without an error.json; its output is above"
    )


def test_resume_continues_and_an_existing_run_is_refused(toy_package, tmp_path, capfd):
    out = tmp_path / "run"
    args = ["train", "--method", "toy", "--dataset", "mini-voc", "--device", "cpu", "--no-eval"]
    args += ["--out", str(out), "--checkpoint-period", "2"]
    assert main([*args, "--max-iter", "2"]) == 0
    (out / ERROR_FILE).write_text('{"message": "stale"}')
    assert main([*args, "--max-iter", "4"]) == 2
    assert _one_line_error(capfd.readouterr().err) == (
        f"{out.resolve()} holds a training run: pass --resume to continue or choose another --out"
    )
    assert main([*args, "--max-iter", "4", "--resume"]) == 0
    request = _request(out)
    assert request.resume is True and request.max_iter == 4
    assert _iterations(out) == [1, 2, 3, 4] and not (out / ERROR_FILE).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope", "--dataset", "mini-voc"], "unknown method 'nope'; available: "),
        (["--method", "notrain", "--dataset", "mini-voc"], "method notrain cannot train (its package declares no trainer)"),
        (["--method", "untiny", "--dataset", "mini-voc", "--tiny"], "method 'untiny' declares no tiny train fixture ([tool.ovss.method.tiny] train)"),
        (["--method", "toy", "--dataset", "ade20k-150"], "dataset ade20k-150: "),
        (["--method", "toy", "--dataset", "coco-stuff-171"], "dataset coco-stuff-171: "),
        (["--method", "toy", "--dataset", "nowhere"], "unknown dataset 'nowhere'"),
        (["--method", "toy", "--dataset", "mini-voc", "--split", "train"], "dataset mini-voc has no 'train' split (it has: val)"),
        (["--method", "toy", "--dataset", "mini-voc", "--eval-datasets", "pc-59"], "dataset pc-59: "),
        (["--method", "toy", "--dataset", "mini-voc", "--opts", "A", "1", "B"], "--opts takes KEY VALUE pairs: the last key has no value"),
        (["--method", "toy", "--dataset", "mini-voc", "--tiny", "--config", "x"], "--tiny picks the config and weights"),
        (["--method", "toy", "--dataset", "mini-voc", "--nproc-per-node", "2", "--device", "cuda:1"], "--device cuda:1 is one GPU for one process"),
        (["--method", "toy", "--dataset", "mini-voc", "--no-eval", "--eval-datasets", "mini-voc"], "--eval-datasets names what --no-eval turns off"),
        (["--method", "toy", "--dataset", "mini-voc", "--weights", "/no/such.pth"], "--weights /no/such.pth: no such file or folder"),
        (["--method", "toy", "--dataset", "mini-voc", "--nnodes", "2"], "--nnodes > 1 needs --node-rank and --master-addr (or --rdzv-endpoint)"),
        (["--method", "toy", "--dataset", "mini-voc", "--rdzv-id", "x"], "--rdzv-id/--rdzv-backend need --rdzv-endpoint HOST:PORT"),
        (["--method", "toy", "--dataset", "mini-voc", "--nnodes", "2", "--node-rank", "2", "--master-addr", "h"], "--node-rank 2 is not below --nnodes 2"),
        (["--method", "toy", "--dataset", "mini-voc", "--rdzv-endpoint", "h:1", "--master-addr", "h"], "--master-addr/--master-port/--node-rank or --rdzv-*, not both"),
    ],
)  # fmt: skip
def test_problems_before_the_trainer_starts_are_one_line(
    args, message, tmp_path, monkeypatch, capsys
):
    notrain = _method_dir(tmp_path, "notrain", "")
    untiny = _method_dir(tmp_path, "untiny", 'train = "untiny.train"\n')
    monkeypatch.setenv("OVSS_METHOD_DIRS", f"{TOY_PROJECT}:{notrain}:{untiny}")
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    assert _one_line_error(capsys.readouterr().err).startswith(message)
    assert not (tmp_path / "run" / REQUEST_FILE).exists()


def test_an_unknown_model_is_one_line(toy_package, tmp_path, capsys):
    base = ["train", "--method", "toy", "--dataset", "mini-voc", "--out", str(tmp_path / "r")]
    assert main([*base, "--config", "toy_huge"]) == 2
    assert _one_line_error(capsys.readouterr().err) == (
        "--config toy_huge: no such file, nor a toy model (toy_small, toy_large)"
    )


def test_an_empty_split_is_one_line(tmp_path, capsys):
    _, labels = _user_dataset(tmp_path)
    for label in labels.iterdir():
        label.unlink()
    assert main(["train", "--method", "toy", "--dataset", "mine", "--out", str(tmp_path)]) == 2
    assert _one_line_error(capsys.readouterr().err) == f"dataset mine: no samples under {labels}"


def test_a_coco_train_split_is_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    coco = get_dataset("coco-stuff-171")
    assert coco.splits == ("val", "train")
    for stem in ("2", "1"):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / f"{stem}.jpg")
    (tmp_path / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "coco" / "stuffthingmaps_detectron2" / "train2017").mkdir(parents=True)
    for stem in ("2", "1"):
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(
            tmp_path / "coco" / "stuffthingmaps_detectron2" / "train2017" / f"{stem}.png"
        )
        (tmp_path / f"{stem}.jpg").rename(tmp_path / "coco" / "train2017" / f"{stem}.jpg")
    assert [s.stem for s in coco.samples(split="train")] == ["1", "2"]
    with pytest.raises(OvssError, match="is missing"):
        coco.samples()  # val is not there


# --- several processes: torchrun's command line and its output ------------------------------


def test_launch_commands():
    python, request = Path("/py"), Path("/runs/r1") / REQUEST_FILE
    trainer = ["-m", "m.train", "--request", str(request)]
    assert launch_command(python, "m.train", request, Distributed()) == ["/py", *trainer]
    torchrun = ["/py", "-m", "torch.distributed.run"]
    two = Distributed(nproc_per_node=2)
    assert launch_command(python, "m.train", request, two) == [
        *torchrun,
        "--standalone",
        "--nproc-per-node",
        "2",
        *trainer,
    ]
    static = Distributed(nproc_per_node=8, nnodes=2, node_rank=1, master_addr="h", master_port=9)
    assert launch_command(python, "m.train", request, static)[3:-4] == [
        "--nproc-per-node",
        "8",
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--master-addr",
        "h",
        "--master-port",
        "9",
    ]
    assert not static.owns_run_folder and Distributed(nnodes=2, node_rank=0).owns_run_folder
    elastic = Distributed(nproc_per_node=4, nnodes=3, rdzv_endpoint="h:29400")
    assert launch_command(python, "m.train", request, elastic)[3:-4] == [
        "--nproc-per-node",
        "4",
        "--nnodes",
        "3",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "h:29400",
        "--rdzv-id",
        "r1",
    ]
    assert not elastic.single and not elastic.owns_run_folder


NOISY_LAUNCH = [
    "\rtrain:  50%|#####     | 1/2",
    "\rtrain: 100%|##########| 2/2\n",
    "W0101 12:00:00.000000 77 torch/distributed/run.py:1] Setting OMP_NUM_THREADS\n",
    "Iteration 2: loss 0.5 — ok\n",
    "E0101 12:00:01.000000 77 torch/distributed/elastic/multiprocessing/api.py:1] failed\n",
    "[rank1]: Traceback (most recent call last):\n",
    '  File "x.py", line 1, in <module>\n',
    "ChildFailedError: train FAILED\n",
    "last words\n",
]
SHOWN = "\rtrain:  50%|#####     | 1/2\rtrain: 100%|##########| 2/2\nIteration 2: loss 0.5 — ok\n"


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_launcher_output_shows_progress_and_hides_torch_logs_and_tracebacks(chunk):
    terminal, log = io.StringIO(), io.StringIO()
    output = LauncherOutput(terminal, log)
    data = "".join(NOISY_LAUNCH).encode()
    for start in range(0, len(data), chunk):
        output.feed(data[start : start + chunk])
    output.close()
    assert terminal.getvalue() == SHOWN
    assert log.getvalue() == "".join(NOISY_LAUNCH)


def test_launcher_output_ends_the_last_line_it_showed():
    terminal = io.StringIO()
    output = LauncherOutput(terminal, io.StringIO())
    output.feed(b"Epoch 1")
    assert terminal.getvalue() == ""  # may still become a log line
    output.close()
    assert terminal.getvalue() == "Epoch 1\n"
    # noise right after a progress bar, on its line: cut off there
    terminal = io.StringIO()
    output = LauncherOutput(terminal, io.StringIO())
    output.feed(b"\rtrain: 1/2E0101 12:00:01.000000 77 api.py:1] failed\nTraceback (most")
    output.feed(b" recent call last):\nlater\n")
    output.close()
    assert terminal.getvalue() == "\rtrain: 1/2\n" and output.quiet


FAKE_TORCHRUN = """
import json, sys
from pathlib import Path
out = Path(sys.argv[1]).parent
sys.stderr.write({progress!r})
sys.stderr.write({noise!r})
sys.stderr.flush()
(out / "error.json").write_text(json.dumps({{"message": "toy: loss is NaN at iteration 2"}}))
sys.exit(1)
"""


def test_under_torchrun_the_error_json_line_replaces_the_launchers_report(
    toy_package, tmp_path, monkeypatch, capsys
):
    script = FAKE_TORCHRUN.format(
        progress="".join(NOISY_LAUNCH[:2]), noise="".join(NOISY_LAUNCH[2:])
    )
    seen = {}

    def fake(python, module, request, dist):
        seen.update(module=module, dist=dist, command=launch_command(python, module, request, dist))
        return [sys.executable, "-c", script, str(request)]

    monkeypatch.setattr(train_module, "launch_command", fake)
    out = tmp_path / "run"
    args = ["--dataset", "mini-voc", "--device", "cuda", "--nproc-per-node", "2"]
    assert main(["train", "--method", "toy", *args, "--out", str(out)]) == 2
    assert seen["module"] == "ovss_toy.train" and seen["dist"].nproc_per_node == 2
    assert seen["command"][1:5] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
    ]
    captured = capsys.readouterr()
    assert SHOWN in captured.err
    assert _one_line_error(captured.err) == "toy: loss is NaN at iteration 2"
    assert "ChildFailedError" in (out / "launcher.log").read_text()


# --- nox ------------------------------------------------------------------------------------


class FakeSession:
    """What a nox session function calls, recorded."""

    def __init__(self, posargs: list[str]) -> None:
        self.posargs = posargs
        self.runs: list[tuple[str, ...]] = []

    def run(self, *args: str, **_: object) -> None:
        self.runs.append(args)

    def error(self, message: str) -> None:
        raise AssertionError(message)


def test_nox_has_train_sessions_for_the_packages_that_declare_a_trainer(monkeypatch):
    sessions = {}

    def session(function=None, name=None, **_):
        def register(f):
            sessions[name or f.__name__] = f
            return f

        return register(function) if function else register

    stub = types.ModuleType("nox")
    stub.options, stub.Session, stub.session = types.SimpleNamespace(), FakeSession, session
    monkeypatch.setitem(sys.modules, "nox", stub)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", REPO / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    for method, table in noxfile.METHODS.items():
        assert (f"train-{method}" in sessions) == ("train" in table)
        assert (f"bench-train-{method}" in sessions) == ("bench-train" in table)
    trainers = [m for m, table in noxfile.METHODS.items() if "train" in table]
    assert trainers, "SAN's package declares a trainer"
    method = trainers[0]
    fake = FakeSession([])
    sessions[f"train-{method}"](fake)
    assert fake.runs[-1][1:] == (
        "-m",
        "ovss.cli",
        "train",
        "--method",
        method,
        "--tiny",
        "--dataset",
        "mini-voc",
        "--max-iter",
        "30",
    )
    if f"bench-train-{method}" in sessions:
        fake = FakeSession(["--steps", "5"])
        sessions[f"bench-train-{method}"](fake)
        python = str(noxfile.METHODS[method]["project"] / ".venv" / "bin" / "python")
        out = str(REPO / "results" / "bench" / f"train-{method}.json")
        module = noxfile.METHODS[method]["bench-train"]
        assert fake.runs[-1] == (python, "-m", module, "--steps", "5", "--out", out)
