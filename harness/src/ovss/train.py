"""``ovss train``: train a method on a registry dataset with the trainer its package declares.

The harness resolves what a trainer needs into one ``ovss_common.training.TrainRequest``: the
config (a file, or a model name of the method's registry; default its default model), the
initial weights, the training split in the method's label space (class names, the lookup from
stored label values to training ids, the samples) and the evaluation (per dataset an
``ovss eval`` command whose ``{config}``, ``{weights}`` and ``{out}`` the trainer fills in). It
writes the request into the run folder and starts the method's trainer module in the method's
environment::

    <method python> -m <train module> --request RUN/train_request.json               (one process)
    <method python> -m torch.distributed.run [--standalone | --nnodes M --node-rank R
        --master-addr A --master-port P | --nnodes M --rdzv-backend B --rdzv-endpoint E
        --rdzv-id I] --nproc-per-node N -m <train module> --request RUN/train_request.json

One process inherits the terminal. Under torchrun the launcher's stderr (which its workers
share) is read through a pseudo-terminal (a pipe where stderr is no terminal), copied into
``RUN/launcher.log`` and forwarded live, so the trainer's progress bar draws; torch's own log
lines, and everything from the first traceback on, go to the log only. Either way a failed
trainer ends in one line: the message of its ``RUN/error.json``, else its exit status and
where its output is.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from ovss.datasets import (
    EVAL_SPLIT,
    TRAIN_SPLIT,
    Dataset,
    LabelSpace,
    build_mini_voc,
    get_dataset,
)
from ovss.environments import MethodPackage, ensure_environment, get_method, registry_models
from ovss.errors import OvssError
from ovss.fixtures import tiny as tiny_fixture
from ovss.worker import worker_environment
from ovss_common.training import (
    ERROR_FILE,
    ERRORS_TO_FILE_ENV,
    REQUEST_FILE,
    Evaluation,
    TrainingData,
    TrainRequest,
    read_error,
)

#: Where a torchrun launcher's stderr (and its workers') is copied.
LAUNCHER_LOG = "launcher.log"
#: Stored label values a lookup covers (``TrainingData.label_lookup``).
LOOKUP_SIZE = 256
#: Prints the device a method environment trains on by default: cuda when torch sees a GPU.
_DEVICE_PROBE = (
    "import importlib.util, sys\n"
    "cuda = importlib.util.find_spec('torch') is not None and __import__('torch').cuda.is_available()\n"
    "sys.stdout.write('cuda' if cuda else 'cpu')\n"
)


@dataclass(frozen=True)
class Distributed:
    """How many trainer processes run where (torchrun's options; all None: one process)."""

    nproc_per_node: int = 1
    nnodes: int | None = None
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    rdzv_backend: str | None = None

    @property
    def single(self) -> bool:
        """One process on one node: the trainer runs without torchrun."""
        return self.nproc_per_node == 1 and (self.nnodes or 1) == 1 and not self._rendezvous

    @property
    def _static(self) -> bool:
        return any(v is not None for v in (self.node_rank, self.master_addr, self.master_port))

    @property
    def _rendezvous(self) -> bool:
        return any(v is not None for v in (self.rdzv_endpoint, self.rdzv_id, self.rdzv_backend))

    @property
    def owns_run_folder(self) -> bool:
        """Whether this node refuses a run folder that holds another run: node 0 of a static
        launch, never a rendezvous node (every node may see one shared folder)."""
        return not self._rendezvous and not self.node_rank

    def check(self) -> None:
        """One-line errors for options that do not make one launch."""
        if self._static and self._rendezvous:
            raise OvssError("--master-addr/--master-port/--node-rank or --rdzv-*, not both")
        if self._rendezvous and self.rdzv_endpoint is None:
            raise OvssError("--rdzv-id/--rdzv-backend need --rdzv-endpoint HOST:PORT")
        static_parts = (self.master_addr, self.node_rank)
        if (self.nnodes or 1) > 1 and not self._rendezvous and None in static_parts:
            raise OvssError("--nnodes > 1 needs --node-rank and --master-addr (or --rdzv-endpoint)")
        if self.node_rank is not None and not 0 <= self.node_rank < (self.nnodes or 1):
            raise OvssError(
                f"--node-rank {self.node_rank} is not below --nnodes {self.nnodes or 1}"
            )

    def launcher(self, run_name: str) -> list[str]:
        """torchrun's options (``--rdzv-id`` defaults to the run folder's name)."""
        options = ["--nproc-per-node", str(self.nproc_per_node)]
        if self._rendezvous:
            return [
                *options,
                "--nnodes",
                str(self.nnodes or 1),
                "--rdzv-backend",
                self.rdzv_backend or "c10d",
                "--rdzv-endpoint",
                str(self.rdzv_endpoint),
                "--rdzv-id",
                self.rdzv_id or run_name,
            ]
        if (self.nnodes or 1) == 1 and not self._static:
            return ["--standalone", *options]
        options += ["--nnodes", str(self.nnodes or 1), "--node-rank", str(self.node_rank or 0)]
        options += ["--master-addr", self.master_addr or "127.0.0.1"]
        if self.master_port is not None:
            options += ["--master-port", str(self.master_port)]
        return options


def launch_command(python: Path, module: str, request: Path, dist: Distributed) -> list[str]:
    """The trainer's command line: the module itself for one process, else under torchrun."""
    trainer = ["-m", module, "--request", str(request)]
    if dist.single:
        return [str(python), *trainer]
    launcher = dist.launcher(request.parent.name)
    return [str(python), "-m", "torch.distributed.run", *launcher, *trainer]


@dataclass
class TrainSettings:
    """What ``ovss train`` was asked for (None: the method's or the config's choice)."""

    method: str
    dataset: str
    out: Path
    config: str | None = None
    weights: Path | None = None
    tiny: bool = False
    split: str | None = None
    resume: bool = False
    max_iter: int | None = None
    batch_size: int | None = None
    checkpoint_period: int | None = None
    log_period: int | None = None
    eval_period: int = 0
    eval_datasets: list[str] | None = None
    evaluate: bool = True
    device: str | None = None
    amp: str | None = None
    threads: int | None = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)
    dist: Distributed = field(default_factory=Distributed)


def label_lookup(space: LabelSpace, ids: np.ndarray) -> list[int] | None:
    """Stored label value -> index into the method's class list (``ids``: the dataset id of
    each class), ``ignore_label`` elsewhere; None where stored values are those indices."""
    if not space.drop_first and np.array_equal(ids, np.arange(space.num_classes)):
        return None
    if space.num_classes >= LOOKUP_SIZE or space.ignore_label >= LOOKUP_SIZE:
        raise OvssError(
            f"label space {space.name}: its training ids need a lookup over more than "
            f"{LOOKUP_SIZE} stored values"
        )
    position = np.full(space.num_classes, space.ignore_label, dtype=np.int64)
    position[ids] = np.arange(len(ids))
    converted = space.convert_gt(np.arange(LOOKUP_SIZE, dtype=np.int64))
    lookup = np.full(LOOKUP_SIZE, space.ignore_label, dtype=np.int64)
    valid = converted < space.num_classes
    lookup[valid] = position[converted[valid]]
    return [int(v) for v in lookup]


def training_data(package: MethodPackage, dataset: Dataset, split: str) -> TrainingData:
    """``split`` of ``dataset`` in the label space ``package`` evaluates it in (as ``ovss eval``
    does natively): the method's class names, the lookup into them, the samples."""
    space = dataset.space_for(package.label_spaces)
    classes, ids = space.vocabulary(package.name)
    samples = dataset.samples(split=split)
    return TrainingData(
        name=dataset.name,
        classes=classes,
        samples=[[os.path.abspath(s.image), os.path.abspath(s.label)] for s in samples],
        label_lookup=label_lookup(space, ids),
        ignore_label=space.ignore_label,
    )


def eval_command(method: str, dataset: str, device: str | None, threads: int | None) -> list[str]:
    """``ovss eval`` of one checkpoint into a fresh folder, with the trainer's placeholders."""
    command = [sys.executable, "-m", "ovss.cli", "eval", "--method", method, "--dataset", dataset]
    command += ["--config", "{config}", "--weights", "{weights}", "--out", "{out}", "--restart"]
    if device is not None:
        command += ["--device", device]
    if threads is not None:
        command += ["--threads", str(threads)]
    return command


def _split(dataset: Dataset, split: str | None) -> str:
    """``split``, else ``train`` where the dataset has one, else its only split (said once)."""
    if split is not None:
        dataset.part(split)
        return split
    if TRAIN_SPLIT in dataset.splits:
        return TRAIN_SPLIT
    print(
        f"ovss: {dataset.name} has no {TRAIN_SPLIT} split: training on its {EVAL_SPLIT} split "
        "(the images ovss eval scores)",
        file=sys.stderr,
    )
    return EVAL_SPLIT


def _prepared(name: str) -> Dataset:
    """The registry dataset ``name``, built first where it is mini-voc."""
    dataset = get_dataset(name)
    if dataset.name == "mini-voc":
        build_mini_voc(dataset.root_path())
    return dataset


def _evaluation(settings: TrainSettings) -> Evaluation | None:
    """The periodic evaluation, every dataset checked to be present now rather than later."""
    if not settings.evaluate:
        return None
    names = list(dict.fromkeys(settings.eval_datasets or [settings.dataset]))
    for name in names:
        _prepared(name).samples()
    return Evaluation(
        period=settings.eval_period,
        datasets=names,
        command={
            name: eval_command(settings.method, name, settings.device, settings.threads)
            for name in names
        },
    )


def _initial_weights(settings: TrainSettings) -> str | None:
    """``--weights`` as an absolute path (a file, or a folder for a method with several)."""
    if settings.weights is None:
        return None
    if not settings.weights.exists():
        raise OvssError(f"--weights {settings.weights}: no such file or folder")
    return str(settings.weights.resolve())


def _config(package: MethodPackage, config: str | None) -> str:
    """``--config`` as an absolute file path or a model name of the method's registry (read in
    its environment), or the registry's default model."""
    if config is not None and Path(config).is_file():
        return str(Path(config).resolve())
    registry = registry_models(package)
    if registry is None:
        if config is not None:
            raise OvssError(f"--config {config}: no such file")
        raise OvssError(
            f"method {package.name} has no model registry: pass --config FILE or --tiny"
        )
    default, models = registry
    if config is None:
        return default
    if config not in models:
        raise OvssError(
            f"--config {config}: no such file, nor a {package.name} model ({', '.join(models)})"
        )
    return config


def _device(python: Path, settings: TrainSettings) -> str:
    """``--device``, else cuda where the method's environment sees a GPU, else cpu."""
    if settings.device is not None:
        return settings.device
    probe = subprocess.run(
        [str(python), "-c", _DEVICE_PROBE], capture_output=True, text=True, env=worker_environment()
    )
    return probe.stdout.strip() if probe.returncode == 0 and probe.stdout.strip() else "cpu"


def _claim(out: Path, settings: TrainSettings) -> None:
    """Refuse a folder that holds a training run unless resuming; drop a stale error."""
    if settings.dist.owns_run_folder and not settings.resume and (out / REQUEST_FILE).is_file():
        raise OvssError(
            f"{out} holds a training run: pass --resume to continue or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).unlink(missing_ok=True)


def prepare_run(settings: TrainSettings) -> tuple[MethodPackage, TrainRequest]:
    """Resolve and check everything (cheap checks first), build the method's environment and
    write the request into the run folder."""
    package = get_method(settings.method)
    if package.train_module is None:
        raise OvssError(f"method {package.name} cannot train (its package declares no trainer)")
    settings.dist.check()
    if (settings.device or "").startswith("cuda:") and not settings.dist.single:
        raise OvssError(
            f"--device {settings.device} is one GPU for one process; several processes take "
            "--device cuda (one GPU per local rank)"
        )
    if settings.eval_datasets and not settings.evaluate:
        raise OvssError("--eval-datasets names what --no-eval turns off: drop one")
    if len(settings.overrides) % 2:
        raise OvssError("--opts takes KEY VALUE pairs: the last key has no value")
    if settings.tiny and (settings.config or settings.weights):
        raise OvssError("--tiny picks the config and weights: drop --config/--weights")
    fixture = tiny_fixture(package.name, "train") if settings.tiny else None
    weights = str(fixture.weights) if fixture else _initial_weights(settings)
    dataset = _prepared(settings.dataset)
    data = training_data(package, dataset, _split(dataset, settings.split))
    evaluation = _evaluation(settings)
    out = settings.out.resolve()
    _claim(out, settings)
    python = ensure_environment(package)
    request = TrainRequest(
        config=str(fixture.config.resolve()) if fixture else _config(package, settings.config),
        out=str(out),
        data=data,
        weights=weights,
        device=_device(python, settings),
        amp=settings.amp,
        resume=settings.resume,
        max_iter=settings.max_iter,
        batch_size=settings.batch_size,
        checkpoint_period=settings.checkpoint_period,
        log_period=settings.log_period,
        seed=settings.seed,
        overrides=list(settings.overrides),
        evaluation=evaluation,
        threads=settings.threads,
    )
    request.write(out)
    return package, request


#: Launcher noise: a Python traceback's first line or one of torch's (glog-style) log lines,
#: either perhaps after a torchrun worker's ``[rankN]:``.
_NOISE = re.compile(
    r"(?:\[(?:default)?rank\d+\]:\s?)?"
    r"(?:(?P<traceback>Traceback \(most recent call last\):)|\[?[IWEF]\d{4} \d\d:\d\d:\d\d)"
)
#: How much of a line that may be noise is held back before it is shown anyway.
_HOLD = 48


class LauncherOutput:
    """Copies a torchrun launcher's stderr into its log and onto the terminal, except torch's
    own log lines and everything from the first traceback on (log only).

    Text is shown as it comes (a progress bar's ``\\r`` updates included); only the start of a
    line that may be noise is held until it is known (``_HOLD`` characters, a ``\\r`` or the
    line's end). Noise that starts in the middle of a shown line (after a progress bar) is
    cut off there.
    """

    def __init__(self, terminal: IO[str], log: IO[str]) -> None:
        self.terminal = terminal
        self.log = log
        self.pending = ""
        # the rest of the current line: shown, hidden, or None at a line's undecided start
        self.showing: bool | None = None
        self.quiet = False
        self.mid_line = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _show(self, text: str) -> None:
        if text:
            self.terminal.write(text)
            self.mid_line = not text.endswith("\n")

    def _verdict(self, start: str, ended: bool) -> bool | None:
        """Whether a line that begins with ``start`` is shown; None while it cannot be told."""
        noise = _NOISE.match(start)
        if noise is not None:
            self.quiet = noise.group("traceback") is not None
            return False
        undecided = not ended and "\r" not in start and len(start) < _HOLD
        return None if undecided and start[:1] in "TIWEF[" else True

    def feed(self, data: bytes) -> None:
        """Take the next bytes the launcher wrote."""
        text = self._decoder.decode(data)
        self.log.write(text)
        self.log.flush()
        while text and not self.quiet:
            if self.showing and (noise := _NOISE.search(text.split("\n", 1)[0])) is not None:
                self._show(text[: noise.start()])
                text, self.showing = text[noise.start() :], None
            end = text.find("\n") + 1
            head, text = (text[:end], text[end:]) if end else (text, "")
            if self.showing is None:
                self.pending += head
                verdict = self._verdict(self.pending, ended=bool(end))
                if verdict is None:
                    continue
                head, self.pending, self.showing = self.pending, "", verdict
                if verdict:  # shown: once more through the check for noise within it
                    text = head + text
                    continue
            if self.showing:
                self._show(head)
            if end:
                self.showing = None
        self.terminal.flush()

    def close(self) -> None:
        """Show a last line that ended without a newline, unless it is noise, and end the line
        shown last (a progress bar's) so that what is printed next starts a line."""
        if self.pending and not self.quiet and self._verdict(self.pending, ended=True):
            self._show(self.pending)
        if self.mid_line:
            self._show("\n")
        self.terminal.flush()


def _reader() -> tuple[int, int]:
    """``(read end, write end)`` for the launcher's stderr: a pseudo-terminal of our terminal's
    size where stderr is a terminal (so progress bars draw as they would), else a pipe."""
    if not sys.stderr.isatty():
        return os.pipe()
    import fcntl
    import pty
    import termios

    primary, secondary = pty.openpty()
    size = fcntl.ioctl(sys.stderr.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, size)
    attributes = termios.tcgetattr(secondary)
    attributes[1] &= ~termios.OPOST  # pass "\n" through as written
    termios.tcsetattr(secondary, termios.TCSANOW, attributes)
    return primary, secondary


@contextlib.contextmanager
def _stopped_on_interrupt(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """On Ctrl-C (which the trainer gets too) give it time to stop, kill it after, re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


def _forward(read_end: int, log_path: Path) -> None:
    """Copy what the launcher writes to ``read_end`` through ``LauncherOutput`` until it ends."""
    with log_path.open("a", encoding="utf-8") as log:
        output = LauncherOutput(sys.stderr, log)
        while True:
            try:
                data = os.read(read_end, 65536)
            except OSError:  # a pseudo-terminal whose last writer closed it
                data = b""
            if not data:
                break
            output.feed(data)
        output.close()


def run_trainer(command: list[str], out: Path, env: dict[str, str], filtered: bool) -> int:
    """Run the trainer's command; returns its exit status. ``filtered``: its stderr goes through
    ``LauncherOutput`` into ``out/launcher.log``; otherwise it inherits the terminal."""
    if not filtered:
        process = subprocess.Popen(command, env=env)
        with _stopped_on_interrupt(process):
            return process.wait()
    read_end, write_end = _reader()
    try:
        process = subprocess.Popen(command, stderr=write_end, env=env)
    finally:
        os.close(write_end)
    with _stopped_on_interrupt(process):
        try:
            _forward(read_end, out / LAUNCHER_LOG)
        finally:
            os.close(read_end)
        return process.wait()


def _failure(method: str, out: Path, status: int, filtered: bool) -> OvssError:
    """The one line a failed trainer ends in: its error.json, else its exit status."""
    message = read_error(out)
    if message is not None:
        return OvssError(message)
    how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
    where = f"its output is in {out / LAUNCHER_LOG}" if filtered else "its output is above"
    return OvssError(f"the {method} trainer stopped ({how}) without an error.json; {where}")


def _final_scores(out: Path) -> list[str]:
    """One line per dataset of the last evaluation in ``out/eval/<iteration>/<dataset>`` (the
    iteration perhaps zero-padded)."""
    folders = [p for p in (out / "eval").glob("*") if p.name.isdigit()]
    if not folders:
        return []
    last = max(folders, key=lambda p: int(p.name))
    lines = []
    for metrics in sorted(last.glob("*/metrics.json")):
        miou = json.loads(metrics.read_text(encoding="utf-8")).get("mIoU")
        shown = "n/a" if miou is None else f"{miou:.2f}"
        where = f"{metrics.parent.name} at iteration {int(last.name)}"
        lines.append(f"  {where}: mIoU {shown} ({metrics})")
    return lines


def run_training(settings: TrainSettings) -> Path:
    """Prepare the run folder, start the trainer and wait; returns the run folder."""
    package, request = prepare_run(settings)
    out = Path(request.out)
    command = launch_command(
        package.python, str(package.train_module), out / REQUEST_FILE, settings.dist
    )
    env = worker_environment()
    env[ERRORS_TO_FILE_ENV] = "1"
    if settings.threads is not None:
        env["OMP_NUM_THREADS"] = str(settings.threads)
    filtered = not settings.dist.single
    status = run_trainer(command, out, env, filtered)
    if status != 0:
        raise _failure(package.name, out, status, filtered)
    return out


HELP = "train a method on a dataset with its package's trainer"


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``ovss train``."""
    positive, natural = _count(1), _count(0)
    parser.add_argument("--method", required=True, help="a method whose package has a trainer")
    parser.add_argument("--dataset", required=True, help="a registry dataset (ovss datasets list)")
    parser.add_argument(
        "--split", help=f"default: {TRAIN_SPLIT} where the dataset has one, else {EVAL_SPLIT}"
    )
    parser.add_argument(
        "--config", help="config file or model name (default: the method's default model)"
    )
    parser.add_argument("--weights", type=Path, help="initial weights (fine-tuning)")
    parser.add_argument(
        "--tiny", action="store_true", help="the method's tiny training fixture (smoke runs)"
    )
    parser.add_argument("--out", type=Path, help="run folder (default: results/train/<name>)")
    parser.add_argument("--name", help="run name (default: <method>-<dataset>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--max-iter", type=positive, help="default: the config's")
    parser.add_argument("--batch-size", type=positive, help="total over all processes")
    parser.add_argument("--checkpoint-period", type=positive, help="iterations between checkpoints")
    parser.add_argument("--log-period", type=positive, help="iterations between metrics lines")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--amp", choices=("none", "fp16", "bf16"), help="default: the config's")
    parser.add_argument("--threads", type=positive, help="CPU threads per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides, in pairs"
    )
    evaluation = parser.add_argument_group("evaluation (ovss eval of a checkpoint)")
    evaluation.add_argument(
        "--eval-period", type=natural, default=0, help="iterations between (default 0: at the end)"
    )
    evaluation.add_argument(
        "--eval-datasets", nargs="+", metavar="NAME", help="default: the training dataset"
    )
    evaluation.add_argument("--no-eval", action="store_true", help="do not evaluate")
    launch = parser.add_argument_group("several processes (torchrun)")
    launch.add_argument("--nproc-per-node", type=positive, default=1)
    launch.add_argument("--nnodes", type=positive)
    launch.add_argument("--node-rank", type=natural)
    launch.add_argument("--master-addr")
    launch.add_argument("--master-port", type=positive)
    launch.add_argument("--rdzv-endpoint", metavar="HOST:PORT")
    launch.add_argument("--rdzv-id", help="default: the run folder's name")
    launch.add_argument("--rdzv-backend", help="default: c10d")


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """``TrainSettings`` from parsed ``ovss train`` arguments."""
    name = args.name or f"{args.method}-{args.dataset}"
    return TrainSettings(
        method=args.method,
        dataset=args.dataset,
        out=args.out or Path("results") / "train" / name,
        config=args.config,
        weights=args.weights,
        tiny=args.tiny,
        split=args.split,
        resume=args.resume,
        max_iter=args.max_iter,
        batch_size=args.batch_size,
        checkpoint_period=args.checkpoint_period,
        log_period=args.log_period,
        eval_period=args.eval_period,
        eval_datasets=args.eval_datasets,
        evaluate=not args.no_eval,
        device=args.device,
        amp=args.amp,
        threads=args.threads,
        seed=args.seed,
        overrides=list(args.opts),
        dist=Distributed(
            nproc_per_node=args.nproc_per_node,
            nnodes=args.nnodes,
            node_rank=args.node_rank,
            master_addr=args.master_addr,
            master_port=args.master_port,
            rdzv_endpoint=args.rdzv_endpoint,
            rdzv_id=args.rdzv_id,
            rdzv_backend=args.rdzv_backend,
        ),
    )


def command(args: argparse.Namespace) -> int:
    """Run ``ovss train``: print where the run is and its last evaluation."""
    settings = settings_from(args)
    if settings.tiny:
        print(
            f"ovss: {settings.method} from its untrained tiny training fixture: for smoke runs",
            file=sys.stderr,
        )
    try:
        out = run_training(settings)
    except KeyboardInterrupt:
        print("ovss: training interrupted; continue it with --resume", file=sys.stderr)
        return 130
    print(f"{settings.method} trained on {settings.dataset} -> {out}")
    for line in _final_scores(out):
        print(line)
    return 0
