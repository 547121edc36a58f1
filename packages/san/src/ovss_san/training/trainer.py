"""The training loop: one process per device under torch.distributed, the original recipe's
schedule, atomic checkpoints, metrics, TensorBoard and periodic evaluation by the harness."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from torch import distributed as dist
from tqdm import tqdm

from ovss_common.training import EVAL_PLACEHOLDERS, METRICS_FILE, TrainRequest
from ovss_common.zoo import fetch
from ovss_san.build import load_san
from ovss_san.clip import architecture_file
from ovss_san.models import MODELS
from ovss_san.training.checkpointing import has_checkpoint, resume, save_checkpoint
from ovss_san.training.clip_init import initialise_from_openai
from ovss_san.training.data import StreamSampler, TrainingSet, derived_seed, stream
from ovss_san.training.mapper import MapperConfig, SemanticTrainMapper
from ovss_san.training.points import SeededPoints
from ovss_san.training.step import StepResult, TrainingStep

#: Iterations between two lines of metrics unless the request says otherwise (detectron2's).
LOG_PERIOD = 20
#: How long processes wait for each other (evaluation runs on the first one meanwhile).
PROCESS_GROUP_TIMEOUT = timedelta(hours=6)


class TrainingError(RuntimeError):
    """A training run that cannot go on: one line."""


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int
    local_rank: int
    world_size: int

    @classmethod
    def from_environment(cls) -> Processes:
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
        )

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, processes: Processes) -> torch.device:
    """``cuda`` means this process's local GPU; a CUDA device that is absent is refused."""
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"device {requested}: CUDA is not available on this machine")
        if device.index is None:
            if processes.local_rank >= torch.cuda.device_count():
                raise TrainingError(
                    f"process {processes.local_rank} of this node has no GPU: the node has "
                    f"{torch.cuda.device_count()}; lower --nproc-per-node"
                )
            device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_config(config: str) -> Path:
    """A config file, or the config of a model in SAN's registry."""
    if config in MODELS.models:
        return MODELS.entry(config).config
    path = Path(config)
    if not path.is_file():
        raise TrainingError(
            f"config {config}: neither a file nor a SAN model ({', '.join(MODELS.models)})"
        )
    return path


def resolve_weights(weights: str | None) -> Path | None:
    """Initial weights: a file, or a SAN model name (fetched through the zoo); None trains from
    OpenAI's CLIP as the recipe does."""
    if weights is None:
        return None
    if weights in MODELS.models:
        return fetch(MODELS.entry(weights).weights[0])
    path = Path(weights)
    if not path.is_file():
        raise TrainingError(f"weights {weights}: no such file")
    return path


def request_overrides(request: TrainRequest) -> list[str]:
    """Config overrides: the request's explicit settings, then the user's ``KEY VALUE`` pairs."""
    pairs: list[str] = []
    for key, value in (
        ("SOLVER.MAX_ITER", request.max_iter),
        ("SOLVER.IMS_PER_BATCH", request.batch_size),
        ("SOLVER.CHECKPOINT_PERIOD", request.checkpoint_period),
        ("SEED", request.seed),
    ):
        if value is not None:
            pairs += [key, str(value)]
    if request.evaluation is not None:
        pairs += ["TEST.EVAL_PERIOD", str(request.evaluation.period)]
    if len(request.overrides) % 2:
        raise TrainingError(f"overrides {request.overrides}: not KEY VALUE pairs")
    return pairs + list(request.overrides)


def config_message(exc: Exception, source: Path) -> str:
    """One line for a config that does not merge (yacs raises KeyError or AssertionError)."""
    lines = str(exc.args[0] if exc.args else "").strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    for marker in ("Non-existent config key:", "Non-existent key:"):
        if marker in text:
            key = text.split(marker, 1)[1].strip()
            return f"config key {key} is not a SAN training key"
    return f"config {source}: {text}"


def amp_mode(request: TrainRequest, cfg: CfgNode, device: torch.device) -> str | None:
    """Mixed precision: the request's, else fp16 where the config enables AMP; CUDA only."""
    if device.type != "cuda":
        return None
    if request.amp is not None:
        return None if request.amp == "none" else request.amp
    return "fp16" if cfg.SOLVER.AMP.ENABLED else None


def write_run_config(cfg: CfgNode, source: Path, out: Path) -> Path:
    """``out/config.yaml`` (the effective config) and the CLIP architecture file it names."""
    path = out / "config.yaml"
    path.write_text(cfg.dump(), encoding="utf-8")
    architecture = architecture_file(cfg.MODEL.SAN.CLIP_MODEL_NAME, source.parent)
    if architecture is not None:
        shutil.copyfile(architecture, out / architecture.name)
    return path


def read_miou(path: Path) -> float | None:
    """The ``mIoU`` of an evaluation's ``metrics.json``, or None if it has none."""
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["mIoU"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class MetricsLog:
    """``metrics.jsonl`` and TensorBoard events (first process only). A resumed run drops the
    lines of iterations after ``start_iter`` (run again from the checkpoint)."""

    def __init__(self, out: Path, enabled: bool, start_iter: int = 0) -> None:
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.path = out / METRICS_FILE
            if self.path.is_file():
                kept = [
                    line
                    for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("iteration", 0) <= start_iter
                ]
                self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
            self.writer = SummaryWriter(log_dir=str(out), purge_step=start_iter + 1)

    def write(self, iteration: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"iteration": iteration, **values}) + "\n")
        for key, value in values.items():
            self.writer.add_scalar(key, value, iteration)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def averaged(
    values: dict[str, float], processes: Processes, device: torch.device
) -> dict[str, float]:
    """``values`` averaged over all processes (what the logs show)."""
    if processes.world_size == 1:
        return values
    keys = sorted(values)
    stacked = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    return dict(zip(keys, (stacked / processes.world_size).tolist(), strict=True))


class Trainer:
    """One training process.

    Args:
        request: the harness's request.
        processes: this process among the others.
    """

    def __init__(self, request: TrainRequest, processes: Processes) -> None:
        self.request = request
        self.processes = processes
        self.out = Path(request.out)
        self.device = resolve_device(request.device, processes)
        if request.threads:
            torch.set_num_threads(request.threads)
        self.source = resolve_config(request.config)
        torch.manual_seed(request.seed)
        try:
            model, cfg = load_san(
                self.source,
                resolve_weights(request.weights),
                self.device,
                request_overrides(request),
            )
        except (KeyError, AssertionError) as exc:
            raise TrainingError(config_message(exc, self.source)) from None
        if request.weights is None and not (request.resume and has_checkpoint(self.out)):
            initialise_from_openai(model, cfg)
        self.cfg = cfg
        self.config_text = cfg.dump()
        wrap = None
        if processes.world_size > 1:
            index = [self.device.index] if self.device.type == "cuda" else None
            wrap = lambda module: torch.nn.parallel.DistributedDataParallel(  # noqa: E731
                module, device_ids=index, forward_sync_buffers=False
            )
        self.training = TrainingStep(
            model, cfg, request.data.classes, amp_mode(request, cfg, self.device), wrap
        )
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.start_iter = 0
        if request.resume:
            resumed = resume(self.out, self.training, self.config_text)
            if resumed is not None:
                self.start_iter = resumed.iteration
            self.check_same_start()
        try:
            mapper = SemanticTrainMapper(MapperConfig.from_cfg(cfg))
        except (AssertionError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
            raise TrainingError(
                f"config {self.source}: its INPUT settings cannot augment training data ({reason})"
            ) from None
        self.dataset = TrainingSet(request.data, mapper, cfg.SEED, len(request.data.classes))
        self.sampler = StreamSampler(
            self.start_iter, cfg.SOLVER.IMS_PER_BATCH, processes.rank, processes.world_size
        )
        self.log = MetricsLog(self.out, processes.main, self.start_iter)
        self.log_period = request.log_period or LOG_PERIOD

    def batches(self) -> Iterator[list]:
        return iter(stream(self.dataset, self.sampler, self.cfg.DATALOADER.NUM_WORKERS))

    def step(self, batch: list) -> tuple[StepResult, float | None]:
        seeds = [derived_seed(self.cfg.SEED, item.position, 2) for item in batch]
        points = SeededPoints(seeds, self.device)
        samples = [item.sample for item in batch]
        try:
            return self.training.run(samples, points)
        except torch.OutOfMemoryError:
            if self.processes.world_size > 1:
                raise TrainingError(
                    f"out of memory on {self.device} with {len(samples)} images per process; "
                    "pass a smaller --batch-size (one process finds the size that fits)"
                ) from None
            raise TrainingError(self.out_of_memory(samples, points)) from None

    def check_same_start(self) -> None:
        """Every process must continue from the same iteration (a run folder that is not
        shared between nodes would leave some without the checkpoint)."""
        if self.processes.world_size == 1:
            return
        starts = torch.tensor([self.start_iter, -self.start_iter], device=self.device)
        dist.all_reduce(starts, op=dist.ReduceOp.MAX)
        if int(starts[0]) != -int(starts[1]):
            raise TrainingError(
                f"the processes resume from different iterations ({-int(starts[1])} to "
                f"{int(starts[0])}): every node must see the same --out folder"
            )

    def out_of_memory(self, samples: list, points: SeededPoints) -> str:
        """The message for a batch that does not fit: which smaller batch does."""
        size = len(samples)
        self.training.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        fits = 0
        trial = size // 2
        while trial >= 1 and not fits:
            try:
                self.training.backward(samples[:trial], points)
                fits = trial
            except torch.OutOfMemoryError:
                trial //= 2
            self.training.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
        where = f"out of memory on {self.device} with {size} images per process"
        if not fits:
            return f"{where}; even 1 image does not fit: lower INPUT.CROP.SIZE"
        total = fits * self.processes.world_size
        return f"{where}; {fits} per process fits: pass --batch-size {total}"

    def save(self, iteration: int) -> Path | None:
        path = None
        if self.processes.main:
            path = save_checkpoint(self.out, self.training, iteration, self.config_text)
        if self.processes.world_size > 1:
            dist.barrier()
        return path

    def evaluate(self, iteration: int, weights: Path | None) -> None:
        """Run the harness's evaluation of ``weights`` on each configured dataset (first
        process; the others wait) and log each mIoU. A failed evaluation is logged, and
        training goes on."""
        evaluation = self.request.evaluation
        if evaluation is None or not self.processes.main or weights is None:
            return
        config = self.out / "config.yaml"
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        results: dict[str, float] = {}
        for dataset in evaluation.datasets:
            out = self.out / "eval" / f"{iteration:07d}" / dataset
            values = dict(
                zip(EVAL_PLACEHOLDERS, (str(config), str(weights), str(out)), strict=True)
            )
            argv = [values.get(arg, arg) for arg in evaluation.command[dataset]]
            try:
                done = subprocess.run(argv, capture_output=True, text=True)
                lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            except OSError as exc:
                done, lines = None, [str(exc)]
            miou = read_miou(out / "metrics.json") if done and done.returncode == 0 else None
            if miou is not None:
                results[f"eval/{dataset}/mIoU"] = miou
            else:
                tqdm.write(f"evaluation on {dataset} at iteration {iteration} failed: {lines[-1]}")
                results[f"eval/{dataset}/failed"] = 1.0
        self.log.write(iteration, results)

    def total_loss(self, result: StepResult, iteration: int) -> float:
        """The total loss averaged over the processes; a loss that is not finite on any
        process stops every process."""
        total = result.total.detach().reshape(1).double()
        if self.processes.world_size > 1:
            dist.all_reduce(total)
            total /= self.processes.world_size
        value = float(total)
        if not np.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at iteration {iteration}; "
                "lower SOLVER.BASE_LR or check the labels"
            )
        return value

    def record(
        self,
        iteration: int,
        result: StepResult,
        norm: float | None,
        data_time: float,
        per_iteration: float,
    ) -> None:
        """One line of metrics: the weighted loss terms and their total averaged over the
        processes, the learning rate, the gradient norm and the timing."""
        values = {k: float(v.detach()) for k, v in result.weighted.items()}
        values["total_loss"] = float(result.total)
        values = averaged(values, self.processes, self.device)
        values |= {
            "lr": result.lr,
            "data_time": data_time,
            "time": per_iteration,
            "eta_seconds": per_iteration * (self.max_iter - iteration),
        }
        if norm is not None:
            values["grad_norm"] = norm
        self.log.write(iteration, values)

    def train(self) -> None:
        """Run from ``start_iter`` to ``SOLVER.MAX_ITER``."""
        main = self.processes.main
        if main:
            write_run_config(self.cfg, self.source, self.out)
        period = self.cfg.SOLVER.CHECKPOINT_PERIOD
        eval_period = self.request.evaluation.period if self.request.evaluation else 0
        progress = tqdm(
            total=self.max_iter,
            initial=self.start_iter,
            disable=not main,
            desc="train",
            unit="it",
            dynamic_ncols=True,
        )
        batches = self.batches()
        started = time.perf_counter()
        try:
            for iteration in range(self.start_iter + 1, self.max_iter + 1):
                data_start = time.perf_counter()
                batch = next(batches)
                data_time = time.perf_counter() - data_start
                result, norm = self.step(batch)
                done = iteration == self.max_iter
                total = self.total_loss(result, iteration)
                progress.update(1)
                progress.set_postfix(loss=f"{total:.3f}")
                if iteration % self.log_period == 0 or done:
                    per_iteration = (time.perf_counter() - started) / (iteration - self.start_iter)
                    self.record(iteration, result, norm, data_time, per_iteration)
                checkpoint = (period and iteration % period == 0) or done
                evaluate = (eval_period and iteration % eval_period == 0) or done
                weights = self.save(iteration) if checkpoint or evaluate else None
                if evaluate:
                    self.evaluate(iteration, weights)
                if self.processes.world_size > 1 and evaluate:
                    dist.barrier()
        finally:
            progress.close()
            self.log.close()


def init_processes(processes: Processes, device: str) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs) when there are several processes."""
    if processes.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)


def train(request: TrainRequest) -> None:
    """Train as ``request`` says, in this process (one of ``WORLD_SIZE``)."""
    # DDP's performance hint about gradient layouts (SAN's fused attention returns some
    # gradients transposed) says nothing a user can act on.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    processes = Processes.from_environment()
    init_processes(processes, request.device)
    try:
        Trainer(request, processes).train()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
