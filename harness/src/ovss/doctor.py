"""``ovss doctor``: one screen, one line per check, and the fix for each problem.

It checks, without building or downloading anything:

- each method's environment (built, in sync with its lock) and its prepare steps (the patched
  detectron2 tree);
- inside each ready environment (``ovss_common.doctor``): the installed versions of Python and
  of the package's direct dependencies, the device torch sees (GPUs, capability, free memory),
  and every weights file of the method's zoo (cached or not; a cached file's SHA-256 checked);
- each dataset: registered user datasets checked on disk (``datasets check``), built-in ones
  said to be prepared or not.

Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from ovss.datasets import all_datasets
from ovss.datasets.prepare import check_dataset
from ovss.environments import (
    MethodPackage,
    discover_methods,
    environment_status,
    get_method,
    repo_root,
)
from ovss.worker import worker_environment
from ovss_common import detectron2_compat

HELP = "check this machine: environments, detectron2, weights, device, datasets"
#: How each status is shown.
MARKS = {"ok": "ok  ", "fail": "FAIL", "info": "--  "}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ``ok``, ``fail`` or ``info``."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{MARKS[self.status]} {self.name}: {self.detail}"
        return f"{text} -> fix: {self.fix}" if self.fix else text


def environment_checks(package: MethodPackage) -> Iterator[Check]:
    """The method's environment, its prepare steps, then what its own probe reports."""
    status = environment_status(package)
    name = f"env {package.name}"
    if status != "ready":
        fix = f"nox -s env-{package.name}"
        yield Check(name, "fail", f"{package.venv} is {status}", fix)
    else:
        yield Check(name, "ok", f"{package.venv} in sync with {package.lock.name}")
    for step in package.prepare:
        destination = repo_root() / detectron2_compat.BUILD_DIR
        if detectron2_compat.is_prepared(destination):
            yield Check(f"{step} for {package.name}", "ok", f"patched tree at {destination}")
        else:
            yield Check(f"{step} for {package.name}", "fail", "not prepared", "nox -s setup")
    if status == "ready":
        yield from probe(package)


def probe(package: MethodPackage) -> Iterator[Check]:
    """``python -m ovss_common.doctor`` in the method's environment."""
    command = [str(package.python), "-m", "ovss_common.doctor", package.distribution]
    if package.models_module:
        command.append(package.models_module)
    done = subprocess.run(command, capture_output=True, text=True, env=worker_environment())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        yield Check(f"probe {package.name}", "fail", last, f"nox -s env-{package.name}")
        return
    for line in done.stdout.splitlines():
        row = json.loads(line)
        name = (
            row["check"] if row["check"].startswith("weights") else f"{row['check']} {package.name}"
        )
        yield Check(name, row["status"], row["detail"], row["fix"])


def dataset_checks() -> Iterator[Check]:
    """User datasets checked on disk; built-in ones prepared or not (not an error)."""
    for name, dataset in sorted(all_datasets().items()):
        check = f"dataset {name}"
        if dataset.custom_space is None:
            if dataset.root_path().is_dir():
                yield Check(check, "ok", f"at {dataset.root_path()}")
            else:
                yield Check(check, "info", f"not prepared ({dataset.prepare})")
            continue
        problems = check_dataset(name)
        if problems:
            fix = f"correct the files, or ovss datasets register {name} again"
            yield Check(check, "fail", f"{problems[0]} ({len(problems)} problems)", fix)
        else:
            yield Check(check, "ok", f"{len(dataset.samples())} images, labels readable")


def run_checks(methods: list[str] | None = None) -> list[Check]:
    """Every check, methods first (all discovered ones unless ``methods`` names some)."""
    packages = discover_methods()
    checks: list[Check] = []
    for name in methods or sorted(packages):
        checks += list(environment_checks(packages[name]))
    checks += list(dataset_checks())
    return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", nargs="+", metavar="METHOD", help="default: every method")


def command(args: argparse.Namespace) -> int:
    for name in args.methods or []:
        get_method(name)
    checks = run_checks(args.methods)
    for check in checks:
        print(check.line())
    failed = [check for check in checks if check.status == "fail"]
    print(
        f"{len(failed)} of {len(checks)} checks failed"
        if failed
        else f"all {len(checks)} checks passed"
    )
    return 1 if failed else 0
