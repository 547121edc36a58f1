"""detectron2 0.6 on current releases: the pinned sdist plus our own patch set.

SAN and OVSeg are detectron2 models. detectron2 0.6 does not install or import on torch 2.x,
numpy 2, Pillow >= 10, setuptools >= 81 and Python 3.11 as released. This module:

1. fetches the registry's ``pb1-detectron2==0.6`` sdist (a verbatim copy of upstream v0.6's
   Python code without the C++ sources) and checks its pinned SHA-256;
2. unpacks it into a build directory (ignored by git);
3. applies ``PATCHES``: each is a named set of edits keyed by file and an exact old token, or a
   file of our own added to the tree; an edit whose token is not found the expected number of
   times stops the recipe (so an unexpected sdist can never be half-patched);
4. replaces ``setup.py`` (which imports torch and compiles C++ sources that are absent) with a
   ``pyproject.toml`` of our own that builds a pure-Python wheel.

Method packages reference the resulting **directory** from ``[tool.uv.sources]`` (a rebuilt
wheel's hash would differ between machines and break ``uv sync --locked``). Run it as::

    python -m ovss_common.detectron2_compat build/detectron2-0.6

The directory records what was applied in ``OVSS_PATCHES.json``; a directory prepared with the
same patch set is left as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ovss_common.downloads import DownloadError, registry_file

SDIST_PROJECT = "pb1-detectron2"
SDIST_FILENAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
SDIST_TOP = "pb1-detectron2-0.6"
RECORD = "OVSS_PATCHES.json"
#: Where method packages expect the prepared tree, relative to the repository root
#: (their ``[tool.uv.sources]`` point at it).
BUILD_DIR = Path("build") / "detectron2-0.6"


class PatchError(Exception):
    """The sdist does not look as the patch set expects; nothing was installed."""


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` by ``new`` in ``file``; ``old`` must occur exactly ``count`` times."""

    file: str
    old: str
    new: str
    count: int = 1


@dataclass(frozen=True)
class Patch:
    """One compatibility fix: why it is needed, and the edits / files that make it."""

    name: str
    why: str
    edits: tuple[Edit, ...] = ()
    add: dict[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()


_NO_COMPILED_OPS = '''\
"""Stand-in for detectron2's compiled extension, which this install does not build.

Added by OVSS: modules that import ``_C`` at import time still import; using a compiled op
(rotated boxes, deformable convolution, the C++ COCO evaluator) raises a clear error instead.
SAN and OVSeg inference use none of them.
"""


class _MissingCompiledOps:
    def __getattr__(self, name):
        raise RuntimeError(
            f"detectron2._C.{name} is unavailable: OVSS installs detectron2 0.6 without its "
            "C++ extension (SAN and OVSeg do not need it)"
        )


_C = _MissingCompiledOps()
'''

_PYPROJECT = """\
# Written by OVSS (ovss_common.detectron2_compat): builds detectron2 0.6 as pure Python,
# without setup.py (which imports torch and compiles C++ sources absent from this sdist).
[project]
name = "detectron2"
version = "0.6+ovss.{digest}"
description = "detectron2 0.6 Python code with the OVSS compatibility patches"
requires-python = ">=3.11"
dependencies = [
    "numpy>=2.0",
    "Pillow>=10.1",
    "matplotlib",
    "pycocotools>=2.0.8",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "pyyaml",
]

[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[tool.setuptools.packages.find]
include = ["detectron2*"]

[tool.setuptools.package-data]
"detectron2.model_zoo" = ["configs/**/*.yaml", "configs/**/*.py"]
"""

_NUMPY_ALIASES = (
    Edit("detectron2/evaluation/sem_seg_evaluation.py", "dtype=np.int)", "dtype=np.int64)", 2),
    Edit("detectron2/evaluation/sem_seg_evaluation.py", "dtype=np.float)", "dtype=np.float64)", 2),
    Edit(
        "detectron2/evaluation/sem_seg_evaluation.py", "astype(np.float)", "astype(np.float64)", 3
    ),
    Edit("detectron2/evaluation/pascal_voc_evaluation.py", "astype(np.bool)", "astype(bool)", 2),
    Edit("detectron2/structures/masks.py", "astype(np.bool)", "astype(bool)", 2),
    Edit("detectron2/structures/masks.py", "dtype=np.bool)", "dtype=bool)", 1),
    Edit("detectron2/data/datasets/pascal_voc.py", "dtype=np.str)", "dtype=str)", 1),
    Edit("detectron2/data/build.py", "dtype=np.int)", "dtype=np.int64)", 1),
    Edit("detectron2/utils/visualizer.py", "astype(np.bool)", "astype(bool)", 3),
    Edit("detectron2/utils/video_visualizer.py", "dtype=np.bool)", "dtype=bool)", 1),
)

_COMPILED_IMPORT = "from detectron2 import _C"
_SHIM_IMPORT = "from detectron2._ovss_no_compiled_ops import _C"

PATCHES: tuple[Patch, ...] = (
    Patch(
        name="build-without-torch",
        why=(
            "setup.py imports torch at build time and compiles C++/CUDA sources that the sdist "
            "does not ship; a pyproject.toml of ours builds the Python package only"
        ),
        add={"pyproject.toml": _PYPROJECT},
        remove=("setup.py", "setup.cfg", "pb1_detectron2.egg-info"),
    ),
    Patch(
        name="no-compiled-ops",
        why=(
            "four modules import the compiled extension at import time (`from detectron2 import "
            "_C`); they import a stand-in that raises only when a compiled op is used"
        ),
        edits=tuple(
            Edit(f"detectron2/{path}", _COMPILED_IMPORT, _SHIM_IMPORT)
            for path in (
                "evaluation/fast_eval_api.py",
                "layers/rotated_boxes.py",
                "layers/deform_conv.py",
                "layers/roi_align_rotated.py",
            )
        ),
        add={"detectron2/_ovss_no_compiled_ops.py": _NO_COMPILED_OPS},
    ),
    Patch(
        name="pillow-10-resampling",
        why="Pillow 10 removed Image.LINEAR; it was an alias of Image.BILINEAR",
        edits=(
            Edit(
                "detectron2/data/transforms/transform.py",
                "interp=Image.LINEAR",
                "interp=Image.BILINEAR",
            ),
        ),
    ),
    Patch(
        name="numpy-2-aliases",
        why=(
            "numpy 1.24 removed np.int/np.float/np.bool/np.str (aliases of the builtins); "
            "np.int64 / np.float64 / bool / str are what they meant on Linux"
        ),
        edits=_NUMPY_ALIASES,
    ),
    Patch(
        name="no-pkg-resources",
        why=(
            "setuptools 81 no longer ships pkg_resources; model_zoo.get_config_file finds its "
            "configs next to the module instead"
        ),
        edits=(
            Edit("detectron2/model_zoo/model_zoo.py", "import pkg_resources\n", ""),
            Edit(
                "detectron2/model_zoo/model_zoo.py",
                'pkg_resources.resource_filename(\n        "detectron2.model_zoo", ',
                "os.path.join(\n        os.path.dirname(os.path.abspath(__file__)), ",
            ),
        ),
    ),
    Patch(
        name="random-sample-sequence",
        why=(
            "Python 3.11 refuses random.sample on a set; the set is turned into a tuple first, "
            "which is what Python < 3.11 did internally (same draws)"
        ),
        edits=(
            Edit(
                "detectron2/data/common.py",
                "self._rng.sample(self._fallback_candidates, k=1)",
                "self._rng.sample(tuple(self._fallback_candidates), k=1)",
            ),
        ),
    ),
    Patch(
        name="lr-scheduler-base-class",
        why=(
            "torch 2 schedulers derive from lr_scheduler.LRScheduler; the hook's isinstance "
            "check against the private _LRScheduler misses them"
        ),
        edits=(
            Edit(
                "detectron2/engine/hooks.py",
                "torch.optim.lr_scheduler._LRScheduler",
                "torch.optim.lr_scheduler.LRScheduler",
                2,
            ),
        ),
    ),
    Patch(
        name="no-caffe2-export",
        why=(
            "detectron2.export imports caffe2, which torch 2 no longer ships; the caffe2 "
            "exporter is dropped from the package's public names (TorchScript export stays)"
        ),
        edits=(Edit("detectron2/export/__init__.py", "from .api import *\n", ""),),
    ),
    Patch(
        name="weights-only-checkpoints",
        why=(
            "native .pth checkpoints are read with torch.load(weights_only=True) (explicitly, "
            "whatever torch's default), never by unpickling arbitrary objects"
        ),
        edits=(
            Edit(
                "detectron2/checkpoint/detection_checkpoint.py",
                "loaded = super()._load_file(filename)  # load native pth checkpoint",
                'with PathManager.open(filename, "rb") as f:\n'
                '            loaded = torch.load(f, map_location=torch.device("cpu"), weights_only=True)',
            ),
            Edit(
                "detectron2/checkpoint/detection_checkpoint.py",
                "data = torch.load(f)",
                "data = torch.load(f, weights_only=True)",
            ),
        ),
    ),
)


def patch_set_digest() -> str:
    """A short digest of the patch set: a changed patch gives a new version and build."""
    text = json.dumps([asdict(p) for p in PATCHES], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def apply_patches(tree: Path) -> list[str]:
    """Apply every patch to an unpacked sdist at ``tree``; returns the applied patch names.

    Raises:
        PatchError: a file is missing or an old token occurs another number of times.
    """
    applied = []
    for patch in PATCHES:
        for edit in patch.edits:
            path = tree / edit.file
            if not path.is_file():
                raise PatchError(f"patch {patch.name}: {edit.file} is missing from the sdist")
            text = path.read_text(encoding="utf-8")
            found = text.count(edit.old)
            if found != edit.count:
                raise PatchError(
                    f"patch {patch.name}: {edit.file} has {found} occurrence(s) of "
                    f"{edit.old!r}, expected {edit.count}"
                )
            path.write_text(text.replace(edit.old, edit.new), encoding="utf-8")
        for name in patch.remove:
            target = tree / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        for name, content in patch.add.items():
            (tree / name).write_text(
                content.replace("{digest}", patch_set_digest()), encoding="utf-8"
            )
        applied.append(patch.name)
    return applied


def is_prepared(destination: Path) -> bool:
    record = destination / RECORD
    if not record.is_file():
        return False
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("digest") == patch_set_digest()
    except ValueError:
        return False


def prepare(destination: Path) -> Path:
    """Make ``destination`` a patched, pure-Python detectron2 0.6 source tree (idempotent)."""
    destination = destination.resolve()
    if is_prepared(destination):
        return destination
    sdist = registry_file(SDIST_PROJECT, SDIST_FILENAME, SDIST_SHA256)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        tree = Path(scratch) / SDIST_TOP
        applied = apply_patches(tree)
        record = {
            "sdist": SDIST_FILENAME,
            "sha256": SDIST_SHA256,
            "digest": patch_set_digest(),
            "patches": applied,
        }
        (tree / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if destination.exists():
            shutil.rmtree(destination)
        tree.rename(destination)
    return destination


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare the patched detectron2 0.6 source tree.")
    parser.add_argument("destination", type=Path)
    args = parser.parse_args(argv)
    try:
        path = prepare(args.destination)
    except (DownloadError, PatchError) as error:
        print(f"detectron2-compat: error: {error}", file=sys.stderr)
        return 2
    print(f"detectron2 0.6 with the OVSS patch set ({patch_set_digest()}) at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
