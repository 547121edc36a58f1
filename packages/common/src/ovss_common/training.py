"""The training request: what ``ovss train`` hands a method's trainer.

The harness owns datasets and evaluation; a method package owns its model and its training
loop. The harness writes one ``train_request.json`` into the run folder and starts the
method's trainer module (``[tool.ovss.method] train``) in the method's environment::

    python -m <train module> --request RUN/train_request.json

directly for one process, or under ``python -m torch.distributed.run`` for several. The
trainer writes into ``RUN`` only: ``metrics.jsonl`` (one JSON object per logged iteration, at
least ``iteration``, ``lr`` and ``total_loss``), TensorBoard event files, checkpoints
(``model_<iteration>.pth``, ``model_final.pth``, ``last_checkpoint``) and, when it stops on an
error, ``error.json`` (``{"message": one line}``; the first process to fail writes it), which
the harness prints. With ``OVSS_TRAIN_ERRORS_TO_FILE=1`` in its environment (the harness sets
it) a trainer writes its error to that file only, so that the user reads it once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TRAIN_PROTOCOL_VERSION = 1
REQUEST_FILE = "train_request.json"
ERROR_FILE = "error.json"
METRICS_FILE = "metrics.jsonl"
#: Set (to 1) by a launcher that prints ``error.json`` itself.
ERRORS_TO_FILE_ENV = "OVSS_TRAIN_ERRORS_TO_FILE"
#: Placeholders an evaluation command may hold, filled in by the trainer.
EVAL_PLACEHOLDERS = ("{config}", "{weights}", "{out}")


class TrainRequestError(ValueError):
    """A training request that cannot be read: the message is one line."""


@dataclass(frozen=True)
class TrainingData:
    """A training split, in the ids the method trains on.

    Attributes:
        name: the dataset's registry name.
        classes: class names; pixel value ``i`` of a converted label is ``classes[i]``.
        samples: ``[image path, label path]`` pairs.
        label_lookup: 256 entries mapping a stored label value to a training id
            (``ignore_label`` for pixels that are not trained on); None when stored values are
            the training ids already.
        ignore_label: the label value that is not trained on.
    """

    name: str
    classes: list[str]
    samples: list[list[str]]
    label_lookup: list[int] | None = None
    ignore_label: int = 255


@dataclass(frozen=True)
class Evaluation:
    """Periodic evaluation by the harness's evaluator.

    Attributes:
        period: evaluate every ``period`` iterations (and at the end); 0 only at the end.
        datasets: the datasets, in order.
        command: per dataset, an argv whose ``{config}``, ``{weights}`` and ``{out}`` the trainer
            fills in; it writes ``{out}/metrics.json`` with at least ``mIoU``.
    """

    period: int
    datasets: list[str]
    command: dict[str, list[str]]


@dataclass(frozen=True)
class TrainRequest:
    """Everything a trainer needs, as the harness resolved it.

    Attributes:
        config: a config file, or a model name of the method's registry.
        weights: initial weights (fine-tuning, or the tiny fixture), or None for the method's
            own initialisation.
        out: the run folder.
        data: the training split.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (``cuda`` uses each process's local rank).
        amp: ``none``, ``fp16`` or ``bf16`` (mixed precision on CUDA), or None for the config's.
        resume: continue from the run folder's last checkpoint.
        max_iter, batch_size, checkpoint_period, log_period: None keeps the config's value;
            ``batch_size`` is the total over all processes.
        seed: the run's seed (each process derives its own).
        overrides: ``KEY VALUE`` config overrides, as the user wrote them.
        evaluation: periodic evaluation, or None.
        threads: CPU threads per process, or None for torch's default.
    """

    config: str
    out: str
    data: TrainingData
    weights: str | None = None
    device: str = "cpu"
    amp: str | None = None
    resume: bool = False
    max_iter: int | None = None
    batch_size: int | None = None
    checkpoint_period: int | None = None
    log_period: int | None = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = None
    threads: int | None = None
    protocol_version: int = TRAIN_PROTOCOL_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def write(self, folder: Path) -> Path:
        path = Path(folder) / REQUEST_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRequest:
        if data.get("protocol_version") != TRAIN_PROTOCOL_VERSION:
            raise TrainRequestError(
                f"training request speaks protocol {data.get('protocol_version')!r}, "
                f"this trainer {TRAIN_PROTOCOL_VERSION}"
            )
        try:
            fields = dict(data)
            fields["data"] = TrainingData(**fields["data"])
            if fields.get("evaluation") is not None:
                fields["evaluation"] = Evaluation(**fields["evaluation"])
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise TrainRequestError(f"malformed training request ({exc})") from None

    @classmethod
    def read(cls, path: str | Path) -> TrainRequest:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainRequestError(f"training request {path}: unreadable ({exc})") from None
        if not isinstance(data, dict):
            raise TrainRequestError(f"training request {path}: not a JSON object")
        return cls.from_dict(data)


def write_error(folder: Path, message: str) -> bool:
    """Leave ``message`` in ``folder/error.json`` unless another process already has (the
    first failure is the cause); returns whether this call wrote it."""
    try:
        with (Path(folder) / ERROR_FILE).open("x", encoding="utf-8") as stream:
            stream.write(json.dumps({"message": message}) + "\n")
    except FileExistsError:
        return False
    return True


def read_error(folder: Path) -> str | None:
    """The one-line message a trainer left in ``folder/error.json``, if any."""
    try:
        return str(json.loads((Path(folder) / ERROR_FILE).read_text(encoding="utf-8"))["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
