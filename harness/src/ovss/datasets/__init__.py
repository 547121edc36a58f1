"""Datasets: the registry of layouts, the label spaces they are scored in, and mini-voc."""

from ovss.datasets.label_spaces import LabelSpace, get_label_space, label_spaces
from ovss.datasets.mini_voc import build_mini_voc
from ovss.datasets.registry import (
    EVAL_SPLIT,
    TRAIN_SPLIT,
    Dataset,
    Sample,
    all_datasets,
    datasets_root,
    get_dataset,
    register_dataset,
)

__all__ = [
    "EVAL_SPLIT",
    "TRAIN_SPLIT",
    "Dataset",
    "LabelSpace",
    "Sample",
    "all_datasets",
    "build_mini_voc",
    "datasets_root",
    "get_dataset",
    "get_label_space",
    "label_spaces",
    "register_dataset",
]
