"""The training stream: which sample each process reads at each iteration, read and augmented.

Samples are drawn in epochs, each a fresh permutation of the training set seeded by the run's
seed and the epoch. Position ``p`` of the stream is the ``p``-th sample of the whole run;
iteration ``i`` consumes positions ``i * B ... (i + 1) * B - 1`` (``B``, the total batch), and
process ``r`` of ``W`` takes the ``r``-th slice of ``B / W``. Every random choice about a
sample (augmentation, loss points) is seeded by the run's seed and the sample's position, so a
run is the same whatever its number of processes, and a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ovss_common.images import ImageError, read_image
from ovss_common.training import TrainingData
from ovss_san.training.mapper import SemanticTrainMapper, TrainSample


class DataError(ValueError):
    """A training sample that cannot be read: one line naming the file."""


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and platforms)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def read_label(path: Path, lookup: np.ndarray | None) -> np.ndarray:
    """``[H, W]`` uint8 training ids of a label PNG (``lookup`` maps stored values)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I;16", "I"):
                raise DataError(
                    f"label {path}: mode {image.mode} is not a single-channel label map"
                )
            values = np.asarray(image)
    except FileNotFoundError:
        raise DataError(f"label {path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"label {path}: unreadable ({exc})") from None
    if lookup is not None:
        if values.max(initial=0) >= len(lookup):
            raise DataError(f"label {path}: value {int(values.max())} outside the label space")
        values = lookup[values]
    if values.max(initial=0) > 255:
        raise DataError(f"label {path}: value {int(values.max())} does not fit the training ids")
    return values.astype(np.uint8)


@dataclass
class PositionedSample:
    """A mapped sample and its position in the run's stream (which seeds its loss points)."""

    position: int
    sample: TrainSample


class TrainingSet(torch.utils.data.Dataset):
    """Position -> the augmented sample at that position of the run's stream.

    Args:
        data: the training split (files and label conversion).
        mapper: SAN's training mapper.
        seed: the run's seed.
        num_classes: labels at or above it (other than the ignore value) are refused.

    The dataset's ignore value becomes the mapper's (``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``).
    """

    def __init__(
        self, data: TrainingData, mapper: SemanticTrainMapper, seed: int, num_classes: int
    ) -> None:
        if not data.samples:
            raise DataError(f"dataset {data.name}: the training split is empty")
        self.data = data
        self.mapper = mapper
        self.seed = seed
        self.num_classes = num_classes
        self.lookup = None if data.label_lookup is None else np.asarray(data.label_lookup)
        self.ignore = mapper.config.ignore_label
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.data.samples)

    def index(self, position: int) -> int:
        """The sample index at a stream position."""
        epoch, offset = divmod(position, len(self))
        if epoch not in self._permutations:
            generator = np.random.default_rng(derived_seed(self.seed, epoch))
            self._permutations = {epoch: generator.permutation(len(self))}
        return int(self._permutations[epoch][offset])

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image ``[H, W, 3]`` and training ids ``[H, W]`` of sample ``index``."""
        image_path, label_path = (Path(p) for p in self.data.samples[index])
        try:
            image = read_image(image_path, exif_transpose=True).rgb
        except ImageError as exc:
            raise DataError(str(exc)) from None
        label = read_label(label_path, self.lookup)
        if self.data.ignore_label != self.ignore:
            label = np.where(label == self.data.ignore_label, self.ignore, label).astype(np.uint8)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"label {label_path}: {label.shape[1]}x{label.shape[0]} does not match its image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        valid = label[label != self.ignore]
        if valid.size and int(valid.max()) >= self.num_classes:
            raise DataError(
                f"label {label_path}: class id {int(valid.max())} but the dataset has "
                f"{self.num_classes} classes"
            )
        return image, label

    def __getitem__(self, position: int) -> PositionedSample:
        image, label = self.read(self.index(position))
        seed = derived_seed(self.seed, position, 1)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        return PositionedSample(position=position, sample=self.mapper(image, label))


class StreamSampler(torch.utils.data.Sampler):
    """The positions one process reads, from ``start_iter`` on, ``per_process`` per iteration.

    Args:
        start_iter: the first iteration (0, or where a resumed run continues).
        total_batch: images per iteration over all processes.
        rank, world_size: this process and the number of processes.
    """

    def __init__(self, start_iter: int, total_batch: int, rank: int, world_size: int) -> None:
        if total_batch % world_size:
            raise ValueError(
                f"the batch of {total_batch} does not split over {world_size} processes"
            )
        self.start_iter = start_iter
        self.total_batch = total_batch
        self.per_process = total_batch // world_size
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        iteration = self.start_iter
        while True:
            first = iteration * self.total_batch + self.rank * self.per_process
            yield from range(first, first + self.per_process)
            iteration += 1


def collate(samples: list[PositionedSample]) -> list[PositionedSample]:
    return samples


def stream(
    dataset: TrainingSet, sampler: StreamSampler, workers: int
) -> torch.utils.data.DataLoader:
    """Batches of ``PositionedSample`` for one process, endless."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=sampler.per_process,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
    )
