"""Method packages and their isolated environments.

A method package is a uv project (``pyproject.toml`` + ``uv.lock``) whose ``pyproject.toml``
declares the method and every fact about it the harness needs, in one table::

    [tool.ovss.method]
    name = "san"
    worker = "ovss_san.worker"         # the module that serves the worker protocol
    prepare = ["detectron2"]           # optional: steps that must run before the lock can sync
    models = "ovss_san.models"         # optional: the module whose MODELS is its model registry
    bench = "ovss_san.bench"           # optional: the benchmark module (nox -s bench-<name>)
    train = "ovss_san.training"        # optional: the trainer module (ovss train, nox -s train-<name>)
    bench-train = "ovss_san.training.bench"  # optional: its benchmark (nox -s bench-train-<name>)
    targets = "reproduce.toml"         # optional: the published numbers ovss reproduce re-measures
    harmonised-options = {}            # optional: load options of the harmonised protocol

    [tool.ovss.method.tiny]            # optional: the golden tiny fixture, per pipeline
    eval = ["tests/golden/config.yaml", "tests/golden/checkpoint.pth"]
    train = ["tests/golden/config_train.yaml", "tests/golden/checkpoint.pth"]  # ovss train --tiny

    [tool.ovss.method.label-spaces]    # optional: dataset -> the label space the original
    mini-voc = "voc-20"                #   evaluation scores it in, where it is not the dataset's

    [tool.ovss.method.dataset-options] # optional: dataset -> load options its original
    ade20k-150 = { ensemble_weight = 0.7 }   # protocol sets there (user options win)

The harness finds them under ``<repo>/packages/*`` and in the extra project folders listed
in ``$OVSS_METHOD_DIRS`` (``os.pathsep``-separated; used by the tests and for a user's own
method), and names none of them. Each gets its own environment in ``<project>/.venv``, built
with ``uv sync --locked --compile-bytecode --project <project>`` (compiled bytecode halves the
imports: nothing compiles it later where ``PYTHONDONTWRITEBYTECODE`` is set); the harness only
ever runs that environment's Python as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ovss.errors import OvssError
from ovss_common import detectron2_compat
from ovss_common.downloads import DownloadError

PIPELINES = ("eval", "demo")
#: What ``[tool.ovss.method.tiny]`` may hold a fixture for: the pipelines and training.
TINY_ENTRIES = (*PIPELINES, "train")


def repo_root() -> Path:
    """The OVSS checkout: ``$OVSS_ROOT``, else the folder above this file that holds ``packages/``."""
    if os.environ.get("OVSS_ROOT"):
        return Path(os.environ["OVSS_ROOT"]).resolve()
    for folder in Path(__file__).resolve().parents:
        if (folder / "packages" / "common" / "pyproject.toml").is_file():
            return folder
    return Path.cwd()


@dataclass(frozen=True)
class Deadlines:
    """How long a method's worker may take before it is stopped, in seconds.

    Attributes:
        load: building the model (weights already downloaded).
        segment: one image, plus ``per_megapixel`` for each million pixels of it.
    """

    load: float = 900.0
    segment: float = 300.0
    per_megapixel: float = 600.0

    def for_image(self, image: str | Path) -> float:
        """The deadline of one image: the base plus its size's share (the base alone when the
        size cannot be read; the worker then reports the image as bad quickly)."""
        try:
            with Image.open(image) as opened:
                width, height = opened.size
        except (OSError, ValueError, Image.DecompressionBombError):
            return self.segment
        return self.segment + self.per_megapixel * width * height / 1e6


def _deadlines(table: dict[str, Any], pyproject: Path) -> Deadlines:
    values = table.get("deadlines", {})
    known = {"load": "load", "segment": "segment", "segment-per-megapixel": "per_megapixel"}
    unknown = sorted(set(values) - set(known))
    if unknown or not all(isinstance(v, int | float) and v > 0 for v in values.values()):
        raise OvssError(
            f"{pyproject}: [tool.ovss.method.deadlines] takes positive seconds for "
            f"{', '.join(known)}"
        )
    return Deadlines(**{known[key]: float(value) for key, value in values.items()})


@dataclass(frozen=True)
class MethodPackage:
    """A method's uv project, where its environment lives, and what it declares about itself.

    Attributes:
        tiny: per pipeline, the golden tiny fixture's config and weights (project-relative).
        label_spaces: per dataset, the label space the method's original evaluation uses.
        dataset_options: per dataset, the load options its original protocol sets there.
        harmonised_options: the load options of the harmonised protocol.
        models_module: the module whose ``MODELS`` is the method's model registry, if any.
        bench_module: the module ``nox -s bench-<name>`` runs, if any.
        train_module: the trainer ``ovss train`` starts (``ovss_common.training``), if any.
        bench_train_module: the module ``nox -s bench-train-<name>`` runs, if any.
        targets_file: the file of published numbers (project-relative), if any.
        deadlines: how long its worker may take (``[tool.ovss.method.deadlines]``).
    """

    name: str
    project: Path
    distribution: str
    version: str
    worker_module: str
    prepare: tuple[str, ...] = ()
    tiny: dict[str, tuple[str, str]] = field(default_factory=dict)
    label_spaces: dict[str, str] = field(default_factory=dict)
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    harmonised_options: dict[str, Any] = field(default_factory=dict)
    models_module: str | None = None
    bench_module: str | None = None
    train_module: str | None = None
    bench_train_module: str | None = None
    targets_file: str | None = None
    deadlines: Deadlines = field(default_factory=Deadlines)

    @property
    def venv(self) -> Path:
        return self.project / ".venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def lock(self) -> Path:
        return self.project / "uv.lock"

    def lock_sha256(self) -> str | None:
        if not self.lock.is_file():
            return None
        return hashlib.sha256(self.lock.read_bytes()).hexdigest()


def _tiny(table: dict[str, Any], pyproject: Path) -> dict[str, tuple[str, str]]:
    tiny = {}
    for pipeline, files in table.get("tiny", {}).items():
        if pipeline not in TINY_ENTRIES or not isinstance(files, list) or len(files) != 2:
            raise OvssError(
                f"{pyproject}: [tool.ovss.method.tiny] {pipeline} must be [CONFIG, WEIGHTS] "
                f"for one of {', '.join(TINY_ENTRIES)}"
            )
        tiny[pipeline] = (str(files[0]), str(files[1]))
    return tiny


def read_method_package(project: Path) -> MethodPackage | None:
    """The method declared by ``project/pyproject.toml``, or None if it declares none."""
    pyproject = project / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OvssError(f"{pyproject}: unreadable ({exc})") from None
    table = data.get("tool", {}).get("ovss", {}).get("method")
    if not table:
        return None
    try:
        return MethodPackage(
            name=table["name"],
            project=project.resolve(),
            distribution=data["project"]["name"],
            version=data["project"]["version"],
            worker_module=table["worker"],
            prepare=tuple(table.get("prepare", ())),
            tiny=_tiny(table, pyproject),
            label_spaces=dict(table.get("label-spaces", {})),
            dataset_options={k: dict(v) for k, v in table.get("dataset-options", {}).items()},
            harmonised_options=dict(table.get("harmonised-options", {})),
            models_module=table.get("models"),
            bench_module=table.get("bench"),
            train_module=table.get("train"),
            bench_train_module=table.get("bench-train"),
            targets_file=table.get("targets"),
            deadlines=_deadlines(table, pyproject),
        )
    except KeyError as exc:
        raise OvssError(f"{pyproject}: [tool.ovss.method] or [project] lacks {exc}") from None
    except (TypeError, ValueError) as exc:
        raise OvssError(f"{pyproject}: malformed [tool.ovss.method] ({exc})") from None


def discover_methods() -> dict[str, MethodPackage]:
    """Every method package in this checkout and in ``$OVSS_METHOD_DIRS``, by name."""
    projects = sorted((repo_root() / "packages").glob("*/pyproject.toml"))
    folders = [p.parent for p in projects]
    extra = os.environ.get("OVSS_METHOD_DIRS", "")
    folders += [Path(p) for p in extra.split(os.pathsep) if p]
    methods: dict[str, MethodPackage] = {}
    for folder in folders:
        if not (folder / "pyproject.toml").is_file():
            raise OvssError(f"{folder}: no pyproject.toml (listed in OVSS_METHOD_DIRS)")
        package = read_method_package(folder)
        if package is not None:
            methods[package.name] = package
    return methods


def method_names() -> list[str]:
    """The names of every discovered method, sorted."""
    return sorted(discover_methods())


def get_method(name: str) -> MethodPackage:
    methods = discover_methods()
    if name not in methods:
        known = ", ".join(sorted(methods)) or "none"
        raise OvssError(f"unknown method {name!r}; available: {known}")
    return methods[name]


def uv_executable() -> str:
    """``$OVSS_UV``, else the uv pinned in the harness environment, else uv on PATH."""
    if os.environ.get("OVSS_UV"):
        return os.environ["OVSS_UV"]
    pinned = Path(sys.executable).parent / "uv"
    if pinned.is_file():
        return str(pinned)
    found = shutil.which("uv")
    if found is None:
        raise OvssError("uv is not on PATH; install it (python3 -m pip install uv) and retry")
    return found


def _uv_environment() -> dict[str, str]:
    """The environment for uv: no inherited venv or project-environment override."""
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    return env


def _sync_command(package: MethodPackage, *extra: str) -> list[str]:
    return [uv_executable(), "sync", "--locked", "--project", str(package.project), *extra]


def environment_status(package: MethodPackage) -> str:
    """``"no lock"``, ``"missing"``, ``"out of sync"`` or ``"ready"`` (checked offline)."""
    if not package.lock.is_file():
        return "no lock"
    if not package.python.is_file():
        return "missing"
    check = subprocess.run(
        _sync_command(package, "--check", "--offline"),
        env=_uv_environment(),
        capture_output=True,
        text=True,
    )
    return "ready" if check.returncode == 0 else "out of sync"


def run_prepare_steps(package: MethodPackage) -> None:
    """Run the package's ``prepare`` steps (idempotent), e.g. the patched detectron2 tree."""
    for step in package.prepare:
        if step != "detectron2":
            raise OvssError(f"{package.project}: unknown prepare step {step!r}")
        destination = repo_root() / detectron2_compat.BUILD_DIR
        if detectron2_compat.is_prepared(destination):
            continue
        print(f"ovss: preparing patched detectron2 0.6 in {destination}", file=sys.stderr)
        try:
            detectron2_compat.prepare(destination)
        except (DownloadError, detectron2_compat.PatchError) as exc:
            raise OvssError(f"preparing detectron2 for {package.name} failed: {exc}") from None


def ensure_environment(package: MethodPackage) -> Path:
    """Build or sync the method's environment from its lock if needed; returns its Python."""
    run_prepare_steps(package)
    status = environment_status(package)
    if status == "ready":
        return package.python
    if status == "no lock":
        raise OvssError(f"{package.project}: no uv.lock; run 'uv lock --project {package.project}'")
    print(
        f"ovss: environment of {package.name} is {status}; building {package.venv} from its lock",
        file=sys.stderr,
    )
    built = subprocess.run(
        _sync_command(package, "--compile-bytecode"),
        env=_uv_environment(),
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["no output"])[-1]
        raise OvssError(f"building the {package.name} environment failed: {last}")
    return package.python


def _models_query(package: MethodPackage, *flags: str) -> list[dict[str, Any]]:
    """``python -m ovss_common.models <models module> FLAGS`` in the method's environment: one
    JSON object per line of its output."""
    python = ensure_environment(package)
    command = [str(python), "-m", "ovss_common.models", str(package.models_module), *flags]
    listed = subprocess.run(command, capture_output=True, text=True, env=_uv_environment())
    if listed.returncode != 0:
        last = (listed.stderr.strip().splitlines() or ["no output"])[-1]
        raise OvssError(f"listing the models of {package.name} failed: {last}")
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def zoo_listing(package: MethodPackage) -> list[dict[str, Any]]:
    """The method's zoo listing (every weights file, its source, how it is checked, whether it
    is cached), read in its own environment; empty for a method without a model registry."""
    if package.models_module is None:
        return []
    return _models_query(package)


def registry_models(package: MethodPackage) -> tuple[str, list[str]] | None:
    """The default model and every model name of the method's registry, read in its own
    environment; None for a method without a model registry."""
    if package.models_module is None:
        return None
    (names,) = _models_query(package, "--names")
    return str(names["default"]), [str(name) for name in names["models"]]
