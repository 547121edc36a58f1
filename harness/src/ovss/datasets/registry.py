"""The dataset registry: where each benchmark lies on disk and which label space it is scored in.

Every dataset has one canonical layout under ``$DETECTRON2_DATASETS`` (default
``./datasets``), detectron2's where detectron2 has one. Samples are the stems of a split file
when the layout has one (raw VOC), else the stems of the label files; each stem's image is
looked up with the dataset's image suffixes.

A dataset's samples are its evaluation split (``val``): what ``ovss eval`` scores. A dataset
whose layout also holds a training split (``train``, e.g. COCO-Stuff's ``train2017``) names its
folders in ``Dataset.train``; ``ovss train`` reads it with ``samples(split="train")``.

Users add their own datasets with ``ovss datasets register`` (kept in
``$OVSS_CONFIG_DIR/datasets.json``, default ``~/.config/ovss``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ovss.datasets.label_spaces import LabelSpace, get_label_space
from ovss.errors import OvssError
from ovss_common.outputs import write_json


def datasets_root() -> Path:
    """``$DETECTRON2_DATASETS``, default ``./datasets`` (as detectron2 resolves it)."""
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).expanduser()


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and its ground-truth label file."""

    stem: str
    image: Path
    label: Path


#: The split every dataset has: the one ``ovss eval`` scores (a user dataset's only one).
EVAL_SPLIT = "val"
#: The split a dataset with ``Dataset.train`` trains on.
TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class TrainSplit:
    """The training split of a dataset: its image and label folders relative to the root."""

    images: str
    labels: str


@dataclass(frozen=True)
class Dataset:
    """A dataset's layout and label space.

    Attributes:
        name: registry name, e.g. ``"ade20k-150"``.
        root: folder relative to the datasets root (or absolute for a user dataset).
        images: image folder relative to ``root``.
        labels: ground-truth folder relative to ``root``.
        label_suffix: ``.png`` or ``.tif``.
        label_space: the label space every method is scored in unless its package declares
            another for this dataset (``[tool.ovss.method.label-spaces]``).
        split: a file of stems relative to ``root``, or None to use every label file.
        image_suffixes: suffixes tried, in order, for each stem's image.
        prepare: how to obtain the files, quoted when they are missing.
        custom_space: the label space of a user dataset (instead of a built-in name).
        train: the training split's folders, when the layout has one.
    """

    name: str
    root: str
    images: str
    labels: str
    label_suffix: str
    label_space: str
    prepare: str
    split: str | None = None
    image_suffixes: tuple[str, ...] = (".jpg", ".png", ".jpeg")
    custom_space: LabelSpace | None = None
    train: TrainSplit | None = None

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this dataset has: ``val``, and ``train`` where its layout holds one."""
        return (EVAL_SPLIT, TRAIN_SPLIT) if self.train is not None else (EVAL_SPLIT,)

    def part(self, split: str) -> Dataset:
        """This dataset with ``split``'s folders as its images and labels."""
        if split == EVAL_SPLIT:
            return self
        if split == TRAIN_SPLIT and self.train is not None:
            return dataclasses.replace(
                self, images=self.train.images, labels=self.train.labels, split=None, train=None
            )
        raise OvssError(
            f"dataset {self.name} has no {split!r} split (it has: {', '.join(self.splits)})"
        )

    def root_path(self) -> Path:
        root = Path(self.root).expanduser()
        return root if root.is_absolute() else datasets_root() / root

    def space_for(
        self, native: dict[str, str] | None = None, override: str | None = None
    ) -> LabelSpace:
        """The label space of a method on this dataset: ``override``, else the user dataset's
        own, else the one the method's ``native`` table (dataset -> label space) names, else
        the dataset's."""
        if override is not None:
            return get_label_space(override)
        if self.custom_space is not None:
            return self.custom_space
        return get_label_space((native or {}).get(self.name, self.label_space))

    def _missing(self, path: Path) -> OvssError:
        return OvssError(f"dataset {self.name}: {path} is missing; {self.prepare}")

    def stems(self) -> list[str]:
        root = self.root_path()
        labels = root / self.labels
        if self.split is not None:
            split = root / self.split
            if not split.is_file():
                raise self._missing(split)
            return [line.strip() for line in split.read_text().splitlines() if line.strip()]
        if not labels.is_dir():
            raise self._missing(labels)
        return sorted(p.stem for p in labels.glob(f"*{self.label_suffix}"))

    def samples(self, limit: int | None = None, split: str = EVAL_SPLIT) -> list[Sample]:
        """The samples of ``split`` (default: the evaluation split) in stem order; every file
        is checked to exist."""
        if split != EVAL_SPLIT:
            return self.part(split).samples(limit)
        root = self.root_path()
        for folder in (root / self.images, root / self.labels):
            if not folder.is_dir():
                raise self._missing(folder)
        stems = self.stems()
        if not stems:
            raise OvssError(f"dataset {self.name}: no samples under {root / self.labels}")
        samples = []
        for stem in stems[:limit] if limit is not None else stems:
            label = root / self.labels / f"{stem}{self.label_suffix}"
            if not label.is_file():
                raise self._missing(label)
            image = next(
                (
                    p
                    for s in self.image_suffixes
                    if (p := root / self.images / f"{stem}{s}").is_file()
                ),
                None,
            )
            if image is None:
                raise self._missing(root / self.images / f"{stem}{self.image_suffixes[0]}")
            samples.append(Sample(stem=stem, image=image, label=label))
        return samples


_ADE_PREPARE = (
    "download ADEChallengeData2016 and run 'ovss datasets prepare ade20k-150 --raw DIR' "
    "(label - 1, 0 -> 255)"
)
_VOC_PREPARE = (
    "extract VOCtrainval_11-May-2012.tar and run 'ovss datasets prepare voc-20 --raw DIR'"
)
_PC_PREPARE = (
    "extract VOC2010 and the Pascal Context labels (trainval/*.mat) into one folder and run "
    "'ovss datasets prepare pc-59 --raw DIR' (pc-459 likewise)"
)

BUILTIN_DATASETS: tuple[Dataset, ...] = (
    Dataset(
        name="ade20k-150",
        root="ADEChallengeData2016",
        images="images/validation",
        labels="annotations_detectron2/validation",
        label_suffix=".png",
        label_space="ade20k-150",
        prepare=_ADE_PREPARE,
    ),
    Dataset(
        name="ade20k-847",
        root="ADE20K_2021_17_01",
        images="images_detectron2/validation",
        labels="annotations_detectron2/validation",
        label_suffix=".tif",
        label_space="ade20k-847",
        prepare=(
            "download the full ADE20K release ADE20K_2021_17_01 and run "
            "'ovss datasets prepare ade20k-847 --raw DIR' (uint16 TIFF trainIds, 65535 = ignore)"
        ),
    ),
    Dataset(
        name="pc-59",
        root="VOCdevkit/VOC2010",
        images="JPEGImages",
        labels="annotations_detectron2/pc59_val",
        label_suffix=".png",
        label_space="pc-59",
        prepare=_PC_PREPARE,
    ),
    Dataset(
        name="pc-459",
        root="VOCdevkit/VOC2010",
        images="JPEGImages",
        labels="annotations_detectron2/pc459_val",
        label_suffix=".tif",
        label_space="pc-459",
        prepare=_PC_PREPARE,
    ),
    Dataset(
        name="voc-20",
        root="VOCdevkit/VOC2012",
        images="JPEGImages",
        labels="SegmentationClass",
        label_suffix=".png",
        label_space="voc-20",
        split="ImageSets/Segmentation/val.txt",
        prepare=_VOC_PREPARE,
    ),
    Dataset(
        name="voc-21",
        root="VOCdevkit/VOC2012",
        images="JPEGImages",
        labels="SegmentationClass",
        label_suffix=".png",
        label_space="voc-21",
        split="ImageSets/Segmentation/val.txt",
        prepare=_VOC_PREPARE,
    ),
    Dataset(
        name="coco-stuff-171",
        root="coco",
        images="val2017",
        labels="stuffthingmaps_detectron2/val2017",
        label_suffix=".png",
        label_space="coco-stuff-171",
        prepare=(
            "extract val2017 (and train2017 to train) and stuffthingmaps_trainval2017 into one "
            "folder and run 'ovss datasets prepare coco-stuff-171 --raw DIR'"
        ),
        train=TrainSplit(images="train2017", labels="stuffthingmaps_detectron2/train2017"),
    ),
    Dataset(
        name="mini-voc",
        root="mini-voc",
        images="JPEGImages",
        labels="SegmentationClass",
        label_suffix=".png",
        label_space="voc-21",
        split="ImageSets/Segmentation/val.txt",
        prepare="run 'ovss datasets build mini-voc'",
    ),
)


def user_registry_path() -> Path:
    base = os.environ.get("OVSS_CONFIG_DIR") or Path.home() / ".config" / "ovss"
    return Path(base) / "datasets.json"


def _user_datasets() -> dict[str, Dataset]:
    path = user_registry_path()
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise OvssError(f"{path}: not valid JSON ({exc})") from None
    datasets = {}
    for name, entry in entries.items():
        space = LabelSpace(
            name=name,
            class_names=entry["classes"],
            method_names={},
            ignore_label=entry["ignore_label"],
        )
        datasets[name] = Dataset(
            name=name,
            root=entry["root"],
            images=entry["images"],
            labels=entry["labels"],
            label_suffix=entry["label_suffix"],
            label_space=name,
            prepare=f"registered by the user in {path}",
            custom_space=space,
        )
    return datasets


def all_datasets() -> dict[str, Dataset]:
    return {**{d.name: d for d in BUILTIN_DATASETS}, **_user_datasets()}


def get_dataset(name: str) -> Dataset:
    datasets = all_datasets()
    if name not in datasets:
        raise OvssError(f"unknown dataset {name!r}; known: {', '.join(datasets)}")
    return datasets[name]


def register_dataset(
    name: str, images: Path, labels: Path, classes: list[str], ignore_label: int = 255
) -> Path:
    """Add (or replace) a user dataset; returns the registry file it was written to."""
    if name in {d.name for d in BUILTIN_DATASETS}:
        raise OvssError(f"{name!r} is a built-in dataset; choose another name")
    for folder in (images, labels):
        if not folder.is_dir():
            raise OvssError(f"{folder}: no such folder")
    suffixes = {
        p.suffix.lower() for p in labels.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff")
    }
    if len(suffixes) != 1:
        raise OvssError(
            f"{labels}: expected label files of one kind (.png or .tif), found {sorted(suffixes) or 'none'}"
        )
    if not classes or len(set(classes)) != len(classes):
        raise OvssError(f"dataset {name}: the class list is empty or repeats a name")
    path = user_registry_path()
    entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entries[name] = {
        "root": "/",
        "images": str(images.resolve()),
        "labels": str(labels.resolve()),
        "label_suffix": suffixes.pop(),
        "classes": classes,
        "ignore_label": ignore_label,
    }
    write_json(path, entries)
    return path
