"""SAN's training step against the original code's (``golden/train``, see its README).

Everything is read from the fixture folder: the config overrides, the recorded batch (the
original mapper's output), every random point in call order, and the expected outputs,
matches, losses, gradients, parameter groups, schedule and parameter updates. Another
fixture recorded the same way drops in with no code change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ovss_common.class_lists import method_names
from ovss_san.build import load_san
from ovss_san.san import MaskPredictions
from ovss_san.training.criterion import TERMS
from ovss_san.training.mapper import TrainSample
from ovss_san.training.optim import poly_lr_factor
from ovss_san.training.points import most_uncertain
from ovss_san.training.step import TrainingStep

GOLDEN = Path(__file__).resolve().parent / "golden"
TRAIN = GOLDEN / "train"
#: The original's training set names -> the OVSS dataset whose SAN class list it uses.
DATASETS = {"coco_2017_train_stuff_sem_seg": "coco-stuff-171"}


def _override_value(value) -> str:
    return repr(tuple(value)) if isinstance(value, list) else repr(value)


class Recording:
    """The fixture: ``train.json`` and the three arrays files."""

    def __init__(self, folder: Path) -> None:
        self.info = json.loads((folder / "train.json").read_text())
        self.batch = np.load(folder / "batch.npz")
        self.step = np.load(folder / "step.npz")
        self.params = np.load(folder / "params.npz")

    @property
    def overrides(self) -> list[str]:
        pairs = []
        for key, value in self.info["overrides"]:
            pairs += [key, _override_value(value)]
        return pairs

    @property
    def vocabulary(self) -> list[str]:
        return method_names(DATASETS[self.info["dataset_name_in_batch_meta"]], "san")

    def samples(self) -> list[TrainSample]:
        return [
            TrainSample(
                image=torch.from_numpy(self.batch[f"batch/{i}/image"]),
                sem_seg=torch.from_numpy(self.batch[f"batch/{i}/sem_seg"].astype(np.int64)),
                gt_classes=torch.from_numpy(self.batch[f"batch/{i}/gt_classes"]),
                gt_masks=torch.from_numpy(self.batch[f"batch/{i}/gt_masks"]),
            )
            for i in range(len(self.info["samples"]))
        ]

    def array(self, key: str) -> torch.Tensor:
        return torch.from_numpy(self.step[key])


#: Output names of the fixture, in the order the criterion visits them.
def output_names(count: int) -> list[str]:
    return ["main", *(f"aux{i}" for i in range(count - 1))]


class ReplayedPoints:
    """A point source that hands out the recorded points of one step (a test hook)."""

    def __init__(self, recording: Recording, step: str, names: list[str]) -> None:
        self.recording = recording
        self.step = step
        self.names = names
        self.rows: dict[str, int] = {}

    def matcher_points(self, output, image, count, device):
        points = self.recording.array(f"{self.step}/points/{self.names[output]}/matcher_img{image}")
        assert points.shape == (1, count, 2)
        return points.to(device)

    def criterion_points(self, output, image, mask_logits, count, oversample, importance):
        name = self.names[output]
        coords = self.recording.array(f"{self.step}/points/{name}/crit_coords")
        first = self.rows.get(name, 0)
        rows = mask_logits.shape[0]
        self.rows[name] = first + rows
        assert coords.shape[1] == count
        return coords[first : first + rows].to(mask_logits.device)


@pytest.fixture(scope="module")
def recording() -> Recording:
    return Recording(TRAIN)


@pytest.fixture(scope="module")
def trained(recording):
    """Two steps of our trainer on the recorded batch with the recorded points."""
    torch.set_num_threads(recording.info.get("torch_threads", 2))
    model, cfg = load_san(
        GOLDEN / "config.yaml", GOLDEN / "checkpoint.pth", "cpu", recording.overrides
    )
    initial = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    trainer = TrainingStep(model, cfg, recording.vocabulary)
    batch = recording.samples()
    steps = {}
    for index in range(recording.info["n_steps"]):
        name = f"s{index + 1}"
        names = output_names(len(cfg.MODEL.SIDE_ADAPTER.DEEP_SUPERVISION_IDXS))
        result = trainer.backward(batch, ReplayedPoints(recording, name, names))
        gradients = {
            k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad
        }
        norm = trainer.apply()
        after = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
        steps[name] = {"result": result, "gradients": gradients, "norm": norm, "params": after}
    return {"model": model, "cfg": cfg, "trainer": trainer, "initial": initial, "steps": steps}


def _by_name(outputs: list[MaskPredictions]) -> dict[str, MaskPredictions]:
    ordered = [outputs[-1], *outputs[:-1]]
    return dict(zip(output_names(len(outputs)), ordered, strict=True))


def test_trainable_parameters_and_groups_are_the_originals(recording, trained):
    model = trained["model"]
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(recording.info["trainable_parameter_names"])
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == recording.info["trainable_count"]
    ours = {
        g["param_name"]: (g["initial_lr"], g["weight_decay"], list(g["params"][0].shape))
        for g in trained["trainer"].optimizer.param_groups
    }
    theirs = {
        g["param_name"]: (g["lr"], g["weight_decay"], g["shape"])
        for g in recording.info["optimizer"]["param_groups"]
    }
    assert ours == theirs
    defaults = recording.info["optimizer"]["defaults"]
    adamw = trained["trainer"].optimizer
    assert isinstance(adamw, torch.optim.AdamW)
    for key in ("betas", "eps", "amsgrad"):
        assert adamw.defaults[key] == (tuple(defaults[key]) if key == "betas" else defaults[key])


def test_lr_schedule_is_warmup_poly(recording):
    schedule = recording.info["lr_schedule"]
    ours = [
        schedule["base_lr"]
        * poly_lr_factor(
            it,
            schedule["max_iter"],
            schedule["power"],
            schedule["warmup_iters"],
            constant_ending=schedule["constant_ending"],
        )
        for it in range(schedule["max_iter"])
    ]
    np.testing.assert_allclose(ours, schedule["lr_iter_0_to_max_iter_minus_1"], rtol=1e-12)


@pytest.mark.parametrize("step", ["s1", "s2"])
def test_outputs_match(recording, trained, step):
    outputs = _by_name(trained["steps"][step]["result"].outputs)
    for name, prediction in outputs.items():
        for field, ours in (
            ("pred_logits", prediction.mask_logits),
            ("pred_masks", prediction.mask_preds),
        ):
            theirs = recording.array(f"{step}/outputs/{name}/{field}")
            scale = float(theirs.abs().max())
            torch.testing.assert_close(ours.detach(), theirs, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("step", ["s1", "s2"])
def test_matching_is_exact(recording, trained, step):
    matches = trained["steps"][step]["result"].criterion.matches
    names = output_names(len(matches))
    for name, per_image in zip(names, matches, strict=True):
        for image, match in enumerate(per_image):
            prefix = f"{step}/match/{name}/img{image}"
            assert match.pred.tolist() == recording.step[f"{prefix}/pred_idx"].tolist()
            assert match.gt.tolist() == recording.step[f"{prefix}/gt_idx"].tolist()


@pytest.mark.parametrize("step", ["s1", "s2"])
def test_losses_match(recording, trained, step):
    expected = recording.info["losses"][step]
    result = trained["steps"][step]["result"]
    raw = {k: float(v.detach()) for k, v in result.criterion.losses.items()}
    assert list(raw) == expected["order"]
    np.testing.assert_allclose(
        [raw[k] for k in expected["order"]],
        [expected["raw"][k] for k in expected["order"]],
        rtol=1e-4,
        atol=1e-5,
    )
    weighted = {k: float(v.detach()) for k, v in result.weighted.items()}
    np.testing.assert_allclose(
        [weighted[k] for k in expected["order"]],
        [expected["weighted"][k] for k in expected["order"]],
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_allclose(float(result.total), expected["total"], rtol=1e-4)
    np.testing.assert_allclose(result.lr, expected["lr_used"], rtol=1e-12)
    np.testing.assert_allclose(
        trained["steps"][step]["norm"], expected["grad_total_norm_pre_clip"], rtol=1e-5
    )


def test_gradients_match(recording, trained):
    gradients = trained["steps"]["s1"]["gradients"]
    keys = sorted(k[len("s1/grad/") :] for k in recording.step.files if k.startswith("s1/grad/"))
    assert keys == sorted(gradients)
    reference = {k: recording.array(f"s1/grad/{k}") for k in keys}
    global_max = max(float(g.abs().max()) for g in reference.values())
    for key in keys:
        ours, theirs = gradients[key], reference[key]
        limit = 1e-3 * float(theirs.abs().max()) + 1e-6 * global_max
        assert float((ours - theirs).abs().max()) <= limit, key
    ours_flat = torch.cat([gradients[k].flatten() for k in keys])
    theirs_flat = torch.cat([reference[k].flatten() for k in keys])
    assert float((ours_flat - theirs_flat).norm() / theirs_flat.norm()) <= 1e-4


def test_parameter_updates_match(recording, trained):
    before = trained["initial"]
    for step in ("s1", "s2"):
        after = trained["steps"][step]["params"]
        for key in after:
            update = after[key] - before[key]
            expected = torch.from_numpy(recording.params[f"{step}/param_update/{key}"])
            torch.testing.assert_close(update, expected, rtol=0, atol=1e-5, msg=key)
        before = after


def test_importance_sampling_from_the_recorded_masks_is_exact(recording):
    """Given the original's own mask logits, our uncertainty top-k picks the same points."""
    info = recording.info
    masks = recording.array("s1/outputs/main/pred_masks")
    sources = torch.cat(
        [
            masks[image, recording.array(f"s1/match/main/img{image}/pred_idx")]
            for image in range(len(info["samples"]))
        ]
    )[:, None]
    candidates = recording.array("s1/points/main/crit_candidates")
    chosen = most_uncertain(sources, candidates, info["num_importance_points"])
    coords = recording.array("s1/points/main/crit_coords")
    assert torch.equal(chosen, coords[:, : info["num_importance_points"]])


def test_losses_from_the_recorded_outputs_are_exact(recording, trained):
    """The criterion alone, fed the original's outputs: the README measured bit-equality."""
    criterion = trained["trainer"].criterion
    names = output_names(2)
    recorded = [
        MaskPredictions(
            mask_logits=recording.array(f"s1/outputs/{name}/pred_logits"),
            mask_preds=recording.array(f"s1/outputs/{name}/pred_masks"),
        )
        for name in reversed(names)
    ]
    samples = recording.samples()
    padded = tuple(samples[0].gt_masks.shape[-2:])
    targets = trained["trainer"].targets(samples, padded)
    result = criterion(recorded, targets, ReplayedPoints(recording, "s1", names))
    expected = recording.info["losses"]["s1"]["raw"]
    for term in (*TERMS, *(f"{t}_0" for t in TERMS)):
        np.testing.assert_allclose(float(result.losses[term]), expected[term], rtol=1e-5)


def test_the_criterion_takes_half_precision_outputs(recording, trained):
    """Mixed-precision forwards give bf16/fp16 outputs: the losses are computed in float32 and
    stay within the precision of the inputs."""
    criterion = trained["trainer"].criterion
    names = output_names(2)
    samples = recording.samples()
    targets = trained["trainer"].targets(samples, tuple(samples[0].gt_masks.shape[-2:]))
    expected = recording.info["losses"]["s1"]["raw"]
    for dtype in (torch.bfloat16, torch.float16):
        outputs = [
            MaskPredictions(
                mask_logits=recording.array(f"s1/outputs/{name}/pred_logits").to(dtype),
                mask_preds=recording.array(f"s1/outputs/{name}/pred_masks").to(dtype),
            )
            for name in reversed(names)
        ]
        result = criterion(outputs, targets, ReplayedPoints(recording, "s1", names))
        for term, value in result.losses.items():
            assert value.dtype == torch.float32
            np.testing.assert_allclose(float(value), expected[term], rtol=2e-2)
