"""The front door of OVSS.

    nox -s setup             build every environment and mini-voc, list the methods
    nox -s tests             every project's tests, each in its own environment
    nox -s doctor            check this machine: environments, detectron2, weights, device, datasets
    nox -s lint              ruff check + format check
    nox -s env-<method>      build or sync one method environment from its lock
    nox -s eval-<method> -- --dataset mini-voc [ovss eval options]
    nox -s bench-<method> [-- --images N --model NAME --device cuda]  (methods with a bench)
    nox -s train-<method> [-- ovss train options]   (methods with a trainer; default a tiny
                             smoke run: --tiny --dataset mini-voc --max-iter 30)
    nox -s bench-train-<method> [-- options]  training throughput -> results/bench/train-<m>.json
    nox -s bench-sweep -- --method M [--workers 1 2]   sweep images/min -> results/bench/sweep.json
    nox -s demo [-- --tiny | --image PATH --classes NAME...]   all methods side by side
    nox -s compare -- --dataset mini-voc [--tiny --harmonised --limit N]
    nox -s ovss -- <any ovss command>
    nox -s docs [-- METHOD ...]    re-measure the tables of docs/architectures.md (ovss inspect)
    nox -s app [-- --tiny --methods san --port 7860]    the web demo on 127.0.0.1
    nox -s outdated [-- --json]                 locked vs newest version of each dependency
    nox -s upgrade-<method> [-- --package NAME[==VERSION] ... --keep]   re-lock, test, keep/undo

No session uses a nox virtualenv: every project (harness/, packages/*) is a uv project
with its own uv.lock, synced into its own ``.venv`` with ``uv sync --locked``. The methods are
the packages that declare ``[tool.ovss.method]``: this file names none of them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import nox

ROOT = Path(__file__).resolve().parent
HARNESS = ROOT / "harness"
COMMON = ROOT / "packages" / "common"


def _method_tables() -> dict[str, dict[str, Any]]:
    """Every package under packages/ that declares ``[tool.ovss.method]``, by method name."""
    tables = {}
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("ovss", {}).get("method")
        if table:
            tables[table["name"]] = {**table, "project": pyproject.parent}
    return tables


def _quiet_env() -> dict[str, str]:
    """``ovss_common.quiet.QUIET_ENV``, loaded by path (this file runs outside every project)."""
    spec = importlib.util.spec_from_file_location(
        "ovss_quiet", COMMON / "src" / "ovss_common" / "quiet.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.QUIET_ENV)


METHODS = _method_tables()

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"

QUIET_ENV = {"UV_PYTHON_DOWNLOADS": "never", **_quiet_env()}


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def _prepare(session: nox.Session, project: Path) -> None:
    """Run a method package's ``[tool.ovss.method] prepare`` steps (the patched detectron2)."""
    table = tomllib.loads((project / "pyproject.toml").read_text()).get("tool", {})
    steps = table.get("ovss", {}).get("method", {}).get("prepare", [])
    if not steps:
        return
    common = _sync(session, COMMON)
    for step in steps:
        if step != "detectron2":
            session.error(f"{project.relative_to(ROOT)}: unknown prepare step {step!r}")
        destination = ROOT / "build" / "detectron2-0.6"
        session.run(
            str(common), "-m", "ovss_common.detectron2_compat", str(destination), external=True
        )


def _sync(session: nox.Session, project: Path) -> Path:
    """``uv sync --locked`` one project, with compiled bytecode (these machines set
    ``PYTHONDONTWRITEBYTECODE``, so nothing is compiled later; imports take half the time with
    it); returns the Python of its environment."""
    if not (project / "uv.lock").is_file():
        session.error(f"{project.relative_to(ROOT)} has no uv.lock")
    if project.parent == ROOT / "packages" and project != COMMON:
        _prepare(session, project)
    env = {**QUIET_ENV, "VIRTUAL_ENV": None, "UV_PROJECT_ENVIRONMENT": None}
    sync = ["sync", "--locked", "--compile-bytecode", "--project", str(project)]
    session.run(*_uv(), *sync, external=True, env=env)
    return project / ".venv" / "bin" / "python"


def _method_projects() -> list[Path]:
    return [table["project"] for table in METHODS.values()]


def _ovss(session: nox.Session, *args: str) -> None:
    python = _sync(session, HARNESS)
    session.run(str(python), "-m", "ovss.cli", *args, external=True, env=QUIET_ENV)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the tests of common, the harness and every method package, each in its own env."""
    env = {
        **QUIET_ENV,
        "HF_HUB_OFFLINE": "1",
        "OVSS_OFFLINE": os.environ.get("OVSS_OFFLINE", ""),
        "OVSS_REQUIRE_METHODS": "1",
    }
    projects = [COMMON, *_method_projects(), HARNESS]
    pythons = {project: _sync(session, project) for project in projects}
    for project, python in pythons.items():
        session.run(
            str(python),
            "-m",
            "pytest",
            str(project / "tests"),
            *session.posargs,
            external=True,
            env=env,
        )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    ruff = str(_sync(session, HARNESS).parent / "ruff")
    session.run(ruff, "check", str(ROOT), external=True)
    session.run(ruff, "format", "--check", str(ROOT), external=True)


@nox.session
def doctor(session: nox.Session) -> None:
    """Check this machine (environments, detectron2, weights, device, datasets): ovss doctor."""
    _sync(session, HARNESS)
    _ovss(session, "doctor", *session.posargs)


@nox.session
def setup(session: nox.Session) -> None:
    """Build the harness and every method environment, build mini-voc, list the methods."""
    _sync(session, HARNESS)
    for project in _method_projects():
        _sync(session, project)
    _ovss(session, "datasets", "build", "mini-voc")
    _ovss(session, "methods")


@nox.session
def ovss(session: nox.Session) -> None:
    """Any ovss command: nox -s ovss -- segment --method san --image a.jpg --classes cat --out out"""
    _ovss(session, *session.posargs)


def _app_methods(args: list[str]) -> list[str]:
    """The methods named after ``--methods`` in ``ovss app`` arguments; all present ones if none."""
    if "--methods" not in args:
        return list(METHODS)
    names = []
    for arg in args[args.index("--methods") + 1 :]:
        if arg.startswith("-"):
            break
        names.append(arg)
    return names


@nox.session
def app(session: nox.Session) -> None:
    """The web demo on 127.0.0.1: nox -s app [-- --tiny --methods san ovseg --port 7860]."""
    for method in _app_methods(session.posargs):
        if method in METHODS:
            _sync(session, METHODS[method]["project"])
    _ovss(session, "app", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Every method on the embedded demo images (or --image/--classes) -> results/demo/index.html.

    Needs each method's official weights (downloaded once, checksummed); offline it names the
    missing files. ``-- --tiny`` runs the untrained golden fixtures instead.
    """
    for project in _method_projects():
        _sync(session, project)
    _ovss(session, "demo", *session.posargs)


@nox.session
def compare(session: nox.Session) -> None:
    """Evaluate every method on a dataset -> results/<dataset>/report.{html,md}, metrics.csv."""
    for project in _method_projects():
        _sync(session, project)
    _ovss(session, "compare", *(session.posargs or ["--dataset", "mini-voc"]))


def _env_session(method: str):
    def build(session: nox.Session) -> None:
        _sync(session, METHODS[method]["project"])

    build.__doc__ = (
        f"Build or sync the {method} environment (packages/{method}/.venv) from its lock."
    )
    return build


def _eval_session(method: str):
    def evaluate(session: nox.Session) -> None:
        _sync(session, METHODS[method]["project"])
        args = session.posargs or ["--dataset", "mini-voc"]
        _ovss(session, "eval", "--method", method, *args)

    evaluate.__doc__ = f"ovss eval --method {method} (default: --dataset mini-voc)."
    return evaluate


def _upgrade_session(method: str):
    def lift(session: nox.Session) -> None:
        _ovss(session, "upgrade", "--method", method, *session.posargs)

    lift.__doc__ = (
        f"Re-lock packages/{method} (all or -- --package NAME[==VERSION]...), run its tests, "
        "keep the upgrade or restore the previous lock (docs/upgrading.md)."
    )
    return lift


def _bench_session(method: str, module: str):
    def bench(session: nox.Session) -> None:
        _ovss(session, "datasets", "build", "mini-voc")
        python = _sync(session, METHODS[method]["project"])
        datasets = Path(os.environ.get("DETECTRON2_DATASETS", ROOT / "datasets"))
        args = list(session.posargs)
        if "--out" not in args:
            args += ["--out", str(ROOT / "results" / "bench" / f"{method}.json")]
        folder = str(datasets / "mini-voc" / "JPEGImages")
        session.run(
            str(python), "-m", module, "--folder", folder, *args, external=True, env=QUIET_ENV
        )

    bench.__doc__ = (
        f"{method} at full size with random weights on the mini-voc images -> "
        f"results/bench/{method}.json (options: python -m {module} --help)."
    )
    return bench


def _train_session(method: str):
    def train(session: nox.Session) -> None:
        _sync(session, METHODS[method]["project"])
        args = session.posargs or ["--tiny", "--dataset", "mini-voc", "--max-iter", "30"]
        _ovss(session, "train", "--method", method, *args)

    train.__doc__ = (
        f"ovss train --method {method} (default: --tiny --dataset mini-voc --max-iter 30, "
        f"a smoke run into results/train/{method}-mini-voc)."
    )
    return train


def _bench_train_session(method: str, module: str):
    def bench(session: nox.Session) -> None:
        python = _sync(session, METHODS[method]["project"])
        args = list(session.posargs)
        if "--out" not in args:
            args += ["--out", str(ROOT / "results" / "bench" / f"train-{method}.json")]
        session.run(str(python), "-m", module, *args, external=True, env=QUIET_ENV)

    bench.__doc__ = (
        f"{method} training throughput -> results/bench/train-{method}.json "
        f"(options: python -m {module} --help)."
    )
    return bench


for _method, _table in METHODS.items():
    nox.session(name=f"env-{_method}")(_env_session(_method))
    nox.session(name=f"eval-{_method}")(_eval_session(_method))
    nox.session(name=f"upgrade-{_method}")(_upgrade_session(_method))
    if _table.get("bench"):
        nox.session(name=f"bench-{_method}")(_bench_session(_method, _table["bench"]))
    if _table.get("train"):
        nox.session(name=f"train-{_method}")(_train_session(_method))
    if _table.get("bench-train"):
        nox.session(name=f"bench-train-{_method}")(
            _bench_train_session(_method, _table["bench-train"])
        )


@nox.session
def reproduce(session: nox.Session) -> None:
    """Re-measure one method's published mIoU (-- --method san|ovseg|car); fills docs/reproduce.md."""
    args = list(session.posargs)
    method = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--method"), None)
    if method not in METHODS:
        session.error(f"usage: nox -s reproduce -- --method {'|'.join(METHODS)} [--datasets ...]")
    _sync(session, METHODS[method]["project"])
    _ovss(session, "reproduce", "--docs", str(ROOT / "docs" / "reproduce.md"), *args)


@nox.session
def outdated(session: nox.Session) -> None:
    """Each package's direct dependencies: locked and newest version (-- --json for JSON)."""
    _ovss(session, "outdated", *session.posargs)


@nox.session(name="bench-sweep")
def bench_sweep(session: nox.Session) -> None:
    """Sweep throughput with 1 and 2 Ray workers on mini-voc, a tiny model -> results/bench/sweep.json.

    Options: --method M (required), --dataset D, --workers 1 2, --out FILE.
    """
    args = list(session.posargs)
    method = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--method"), None)
    if method not in METHODS:
        session.error(f"usage: nox -s bench-sweep -- --method {'|'.join(METHODS)} [--workers 1 2]")
    _sync(session, METHODS[method]["project"])
    _ovss(session, "datasets", "build", "mini-voc")
    python = _sync(session, HARNESS)
    if "--out" not in args:
        args += ["--out", str(ROOT / "results" / "bench" / "sweep.json")]
    session.run(str(python), "-m", "ovss.bench_sweep", *args, external=True, env=QUIET_ENV)


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate the measured tables of docs/architectures.md.

    Runs ``ovss inspect`` for each method at full size with random weights on the CPU
    (2 threads; reports in results/inspect/<method>.json), then rewrites the page's generated
    sections from the reports; hand-written text is kept. Takes about 5 minutes on 2 cores.
    Options: the methods to redo (default all), e.g. ``nox -s docs -- METHOD``.
    """
    methods = session.posargs or list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        session.error(f"unknown method {unknown[0]!r} (have {', '.join(METHODS)})")
    reports = [ROOT / "results" / "inspect" / f"{method}.json" for method in methods]
    for method, report in zip(methods, reports, strict=True):
        _sync(session, METHODS[method]["project"])
        _ovss(
            session,
            "inspect",
            "--method",
            method,
            "--random-weights",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--out",
            str(report),
        )
    python = _sync(session, HARNESS)
    session.run(
        str(python),
        "-m",
        "ovss.inspect",
        "--doc",
        str(ROOT / "docs" / "architectures.md"),
        *map(str, reports),
        external=True,
        env=QUIET_ENV,
    )
