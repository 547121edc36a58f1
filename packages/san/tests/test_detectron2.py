"""The patched detectron2 0.6 in the SAN environment: it imports and each fix works on
torch 2.x, numpy 2, Pillow >= 10, setuptools >= 81 and Python 3.11."""

from __future__ import annotations

import importlib
import pkgutil
import random
from pathlib import Path

import detectron2
import numpy as np
import pytest
import torch

#: Modules that need what neither detectron2 declared nor torch 2 ships: cv2 (visualizers),
#: caffe2 and onnx (the Caffe2 exporter; TorchScript export stays available).
OPTIONAL = {
    "detectron2.utils.visualizer": "cv2",
    "detectron2.utils.video_visualizer": "cv2",
    "detectron2.export.api": "caffe2",
    "detectron2.export.c10": "caffe2",
    "detectron2.export.caffe2_export": "onnx",
    "detectron2.export.caffe2_inference": "caffe2",
    "detectron2.export.caffe2_modeling": "caffe2",
    "detectron2.export.caffe2_patch": "caffe2",
    "detectron2.export.shared": "caffe2",
}


def test_version_carries_the_patch_set():
    assert detectron2.__version__ == "0.6"
    from importlib.metadata import version

    assert version("detectron2").startswith("0.6+ovss.")


def test_every_module_imports():
    failures = {}
    for module in pkgutil.walk_packages(detectron2.__path__, "detectron2."):
        if module.name.startswith("detectron2.projects"):
            continue
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as exc:
            if OPTIONAL.get(module.name) != exc.name:
                failures[module.name] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            failures[module.name] = f"{type(exc).__name__}: {exc}"
    assert not failures


def test_torchscript_export_stays_importable():
    from detectron2.export import TracingAdapter, scripting_with_instances

    assert TracingAdapter and scripting_with_instances


def test_compiled_ops_fail_clearly_when_used():
    from detectron2._ovss_no_compiled_ops import _C

    with pytest.raises(RuntimeError, match="without its C\\+\\+ extension"):
        _C.nms_rotated  # noqa: B018


def test_resize_transforms_on_pillow_10():
    from detectron2.data import transforms as T

    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    resized = T.ResizeShortestEdge([64, 64], 1000, "choice").get_transform(image).apply_image(image)
    assert resized.shape == (64, 85, 3)
    extent = T.ExtentTransform((0, 0, 40, 30), (15, 20)).apply_image(image)
    assert extent.shape == (15, 20, 3)


def test_numpy_2_paths():
    from detectron2.evaluation import SemSegEvaluator
    from detectron2.structures import BitMasks, PolygonMasks

    masks = PolygonMasks([[np.array([0, 0, 10, 0, 10, 10, 0, 10], dtype=np.float64)]])
    assert BitMasks.from_polygon_masks(masks, 12, 12).tensor.sum().item() > 0
    assert SemSegEvaluator is not None


def test_model_zoo_configs_without_pkg_resources():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    assert path.endswith("mask_rcnn_R_50_FPN_1x.yaml")


def test_repeat_factor_sampling_on_python_311():
    from detectron2.data.common import MapDataset

    random.seed(0)
    dataset = MapDataset([1, 2, 3], lambda x: None if x == 2 else x)
    assert dataset[0] == 1
    assert dataset[1] in (1, 3), "an unmappable item falls back to a random good one"


def test_lr_scheduler_hook_accepts_torch_2_schedulers():
    from detectron2.engine.hooks import LRScheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    hook = LRScheduler(optimizer, scheduler)
    assert hook.scheduler is scheduler


def test_checkpoints_load_weights_only(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    model = torch.nn.Linear(2, 2)
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    DetectionCheckpointer(torch.nn.Linear(2, 2)).load(str(path))
    torch.save({"model": model.state_dict(), "not_a_tensor": Path("/")}, path)
    with pytest.raises(Exception, match=r"[Ww]eights"):
        DetectionCheckpointer(torch.nn.Linear(2, 2)).load(str(path))
