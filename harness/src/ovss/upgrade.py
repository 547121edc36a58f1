"""``ovss upgrade --method M``: move one method package to newer releases, proven by its tests.

Only ``<project>/uv.lock`` (and ``pyproject.toml`` where an ``==`` pin or a pin patch must move)
changes; no other project is touched. The steps:

1. the package's environment is synced from its current lock and its test suite is run once
   (cached per lock, pyproject and source digest) for the "before" golden-case differences;
2. ``uv lock --upgrade`` (or ``--upgrade-package NAME[==VERSION]`` for each ``--package``);
3. the package's ``prepare`` steps re-apply their patches; every ``[[tool.ovss.patches]]``
   entry is checked (:mod:`ovss.patches`);
4. ``uv sync --locked`` and the full test suite, golden fidelity cases included; each case's
   largest score difference is read from ``$OVSS_FIDELITY_REPORT`` (:mod:`ovss_common.fidelity`);
5. if anything failed, the previous ``uv.lock`` and ``pyproject.toml`` are written back byte for
   byte and the environment is synced again (unless ``keep``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ovss.environments import (
    MethodPackage,
    _uv_environment,
    ensure_environment,
    get_method,
    repo_root,
    run_prepare_steps,
    uv_executable,
)
from ovss.errors import OvssError
from ovss.markdown import replace_block
from ovss.outdated import (
    direct_dependencies,
    is_offline,
    locked_versions,
    newest_version,
    normalize,
)
from ovss.patches import PatchStatus, check_patches, pin_patches_by_package
from ovss_common.downloads import cache_dir
from ovss_common.fidelity import ENV_VAR as FIDELITY_ENV

_REQUEST = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:==([A-Za-z0-9.+!_-]+))?$")


@dataclass
class SuiteResult:
    """One run of a package's test suite."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    fidelity: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"


@dataclass
class UpgradeReport:
    """What an upgrade changed, what the tests said, and whether it was kept."""

    method: str
    project: str
    requested: list[str]
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    before: SuiteResult | None = None
    after: SuiteResult | None = None
    patches: list[PatchStatus] = field(default_factory=list)
    kept: bool = False
    reason: str = ""
    lock_identical: bool | None = None

    @property
    def ok(self) -> bool:
        return self.kept and not self.reason

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def parse_request(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME==VERSION`` -> ``(normalized name, version or None)``."""
    match = _REQUEST.match(text.strip())
    if match is None:
        raise OvssError(f"--package {text!r}: expected NAME or NAME==VERSION")
    return normalize(match.group(1)), match.group(2)


def _run_uv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [uv_executable(), *args], env=_uv_environment(), capture_output=True, text=True
    )


def _last_line(process: subprocess.CompletedProcess) -> str:
    """uv's error in one line: its ``error:`` line and the cause on the line after it."""
    lines = [line.strip() for line in process.stderr.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith(("error:", "×"))]
    if not starts:
        return lines[-1] if lines else "no output"
    error, cause = lines[starts[0]], lines[starts[0] + 1 : starts[0] + 2]
    return " ".join([error.rstrip(":") + ":", *(c.lstrip("╰─▶ ") for c in cause)]).rstrip(":")


def _first_error_line(element: ElementTree.Element) -> str:
    """The first line of a junit failure/error: its message, else the traceback's ``E`` line."""
    message = (element.get("message") or "").strip().splitlines()
    if message and message[0] != "collection failure":
        return message[0]
    for line in (element.text or "").splitlines():
        if line.startswith("E "):
            return line[1:].strip()
    return message[0] if message else "no message"


def _read_junit(path: Path) -> SuiteResult:
    result = SuiteResult()
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            result.failed += 1
            where = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
            result.failures.append((f"{where}::{case.get('name')}", _first_error_line(problem)))
        elif case.find("skipped") is not None:
            result.skipped += 1
        else:
            result.passed += 1
    return result


def _read_fidelity(path: Path) -> dict[str, float]:
    """The largest recorded difference per golden case (over its quantities)."""
    worst: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            worst[entry["case"]] = max(worst.get(entry["case"], 0.0), entry["max_abs_diff"])
    return dict(sorted(worst.items()))


def run_suite(package: MethodPackage, label: str) -> SuiteResult:
    """Run ``<project>/tests`` with the package's own Python; progress goes to stderr."""
    print(f"ovss: running the {package.name} test suite ({label})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="ovss-upgrade-") as scratch:
        junit, fidelity = Path(scratch) / "junit.xml", Path(scratch) / "fidelity.jsonl"
        env = {**_uv_environment(), FIDELITY_ENV: str(fidelity), "HF_HUB_OFFLINE": "1"}
        command = [str(package.python), "-m", "pytest", str(package.project / "tests"), "-q"]
        command += ["-p", "no:cacheprovider", "--tb=short", f"--junitxml={junit}"]
        command += ["-o", "junit_family=xunit1"]
        ran = subprocess.run(command, cwd=package.project, env=env, stdout=2, stderr=2)
        if not junit.is_file():
            return SuiteResult(
                failed=1, failures=[("tests", f"pytest exited with {ran.returncode}")]
            )
        result = _read_junit(junit)
        if ran.returncode not in (0, 1) and not result.failed:
            result.failed, result.failures = 1, [("tests", f"pytest exited with {ran.returncode}")]
        result.fidelity = _read_fidelity(fidelity)
        return result


def _project_digest(package: MethodPackage) -> str:
    """The lock, pyproject and Python sources: what the "before" suite result depends on."""
    digest = hashlib.sha256()
    files = [package.lock, package.project / "pyproject.toml"]
    for folder in ("src", "tests"):
        files += sorted((package.project / folder).rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(package.project)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _baseline_path(package: MethodPackage) -> Path:
    return cache_dir() / "upgrade" / f"{package.name}-{_project_digest(package)}.json"


def _store_baseline(package: MethodPackage, result: SuiteResult) -> None:
    """Cache a passing suite result as the "before" of the next upgrade from this lock."""
    if not result.failed:
        path = _baseline_path(package)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(result)), encoding="utf-8")


def baseline(package: MethodPackage) -> SuiteResult:
    """The suite's result on the current lock: cached under ``<cache>/upgrade`` when it passed."""
    cached = _baseline_path(package)
    if cached.is_file():
        print(
            f"ovss: reusing the {package.name} suite result before the upgrade ({cached})",
            file=sys.stderr,
        )
        data = json.loads(cached.read_text(encoding="utf-8"))
        data["failures"] = [tuple(item) for item in data["failures"]]
        return SuiteResult(**data)
    ensure_environment(package)
    result = run_suite(package, "before the upgrade")
    _store_baseline(package, result)
    return result


def _move_requirement(pyproject: Path, old: str, new: str) -> None:
    """Replace the quoted requirement ``old`` by ``new`` in ``[project] dependencies``."""
    text = pyproject.read_text(encoding="utf-8")
    start = text.find("\ndependencies = [")
    end = text.find("]", start)
    section = text[start:end]
    if start < 0 or section.count(f'"{old}"') != 1:
        raise OvssError(f'{pyproject}: cannot find "{old}" in [project] dependencies')
    moved = section.replace(f'"{old}"', f'"{new}"')
    pyproject.write_text(text[:start] + moved + text[end:], encoding="utf-8")


def _lock_arguments(
    package: MethodPackage, requests: list[tuple[str, str | None]], lift_patches: bool
) -> list[str]:
    """``uv lock`` arguments for the requests; moves ``==`` pins in pyproject to the requested
    (or newest) version, and with ``lift_patches`` the pin patches a requested version needs."""
    if not requests:
        return ["--upgrade"]
    pyproject = package.project / "pyproject.toml"
    dependencies = {dep.name: dep for dep in direct_dependencies(package.project)}
    pin_patches = pin_patches_by_package(package.project)
    arguments = []
    for name, version in requests:
        dep = dependencies.get(name)
        pinned = dep is not None and dep.specifier.startswith("==")
        lift = lift_patches and version is not None and name in pin_patches
        if dep is not None and (pinned or lift):
            if version is None:
                if is_offline():
                    raise OvssError(
                        f"{name} is pinned ({dep.requirement}); offline, name the version: "
                        f"--package {name}==VERSION"
                    )
                version = newest_version(name)
            _move_requirement(pyproject, dep.requirement, f"{name}=={version}")
        arguments += ["--upgrade-package", f"{name}=={version}" if version else name]
    return arguments


def _restore(package: MethodPackage, lock: bytes, pyproject: bytes, sync_args: list[str]) -> bool:
    """Write the old files back and re-sync; True if the lock is byte-identical again."""
    (package.project / "pyproject.toml").write_bytes(pyproject)
    package.lock.write_bytes(lock)
    synced = _run_uv("sync", "--locked", "--project", str(package.project), *sync_args)
    if synced.returncode != 0:
        print(f"ovss: re-syncing {package.name} failed: {_last_line(synced)}", file=sys.stderr)
    return package.lock.read_bytes() == lock


def upgrade(
    method: str,
    packages: Sequence[str] = (),
    keep: bool = False,
    find_links: Sequence[Path] = (),
) -> UpgradeReport:
    """Re-lock one method package (all dependencies, or ``packages``), test it, keep or roll back.

    Raises:
        OvssError: unknown method or package, malformed request, offline without a local index.
    """
    package = get_method(method)
    requests = [parse_request(text) for text in packages]
    if is_offline() and not find_links and not os.environ.get("UV_FIND_LINKS"):
        raise OvssError(
            "offline (UV_OFFLINE or OVSS_OFFLINE is set): an upgrade needs the package index, "
            "or a local one with --find-links DIR"
        )
    old = locked_versions(package.project)
    for name, _ in requests:
        if name not in old:
            raise OvssError(f"unknown package {name!r}: {package.name} does not depend on it")
    index_args = [f"--find-links={Path(folder).resolve()}" for folder in find_links]
    report = UpgradeReport(method, str(package.project), [str(p) for p in packages])
    report.before = baseline(package)
    lock_bytes = package.lock.read_bytes()
    pyproject_bytes = (package.project / "pyproject.toml").read_bytes()
    try:
        _upgrade_steps(package, requests, index_args, old, report)
    except BaseException:
        _restore(package, lock_bytes, pyproject_bytes, index_args)
        raise
    if report.reason and not keep:
        report.lock_identical = _restore(package, lock_bytes, pyproject_bytes, index_args)
    else:
        report.kept = True
        if report.after is not None:
            _store_baseline(package, report.after)
    return report


def _upgrade_steps(
    package: MethodPackage,
    requests: list[tuple[str, str | None]],
    index_args: list[str],
    old: dict[str, str],
    report: UpgradeReport,
) -> None:
    """Lock, re-apply patches, sync and test; failures are recorded in ``report.reason``."""
    arguments = _lock_arguments(package, requests, lift_patches=False)
    locked = _run_uv("lock", "--project", str(package.project), *arguments, *index_args)
    lifting = set(pin_patches_by_package(package.project)) & {n for n, v in requests if v}
    if locked.returncode != 0 and lifting:
        print(
            f"ovss: {', '.join(sorted(lifting))}: outside a pin patch; lifting it", file=sys.stderr
        )
        arguments = _lock_arguments(package, requests, lift_patches=True)
        locked = _run_uv("lock", "--project", str(package.project), *arguments, *index_args)
    if locked.returncode != 0:
        report.reason = f"uv lock failed: {_last_line(locked)}"
        return
    new = locked_versions(package.project)
    report.changes = [
        (name, old.get(name, "-"), new.get(name, "-"))
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
    prepare_error = None
    try:
        run_prepare_steps(package)
    except OvssError as error:
        prepare_error = str(error)
    report.patches = check_patches(package.project, new, prepare_error)
    if prepare_error:
        report.reason = f"a patch no longer applies: {prepare_error}"
        return
    if not report.changes:
        return
    synced = _run_uv("sync", "--locked", "--project", str(package.project), *index_args)
    if synced.returncode != 0:
        report.reason = f"uv sync failed: {_last_line(synced)}"
        return
    report.after = run_suite(package, "after the upgrade")
    if report.after.failed:
        test, error = report.after.failures[0]
        report.reason = f"{report.after.failed} test(s) failed, first {test}: {error}"


def _format_diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_report(report: UpgradeReport) -> str:
    """The report as text: versions, tests, golden cases, patches, outcome."""
    if report.kept and report.reason:
        outcome = f"KEPT FOR INVESTIGATION (--keep): {report.reason}"
    elif report.reason:
        identical = "byte-identical" if report.lock_identical else "NOT identical (check it)"
        outcome = f"ROLLED BACK: {report.reason}; uv.lock restored ({identical}), env re-synced"
    elif not report.changes:
        outcome = "nothing to upgrade: every requested package is at its newest allowed version"
    else:
        outcome = "KEPT: uv.lock and the environment are upgraded"
    lines = [f"upgrade {report.method} ({report.project}): {outcome}"]
    lines.append("versions:" if report.changes else "versions: unchanged")
    lines += [f"  {name:28s} {a} -> {b}" for name, a, b in report.changes]
    before, after = report.before, report.after
    lines.append(
        f"tests: before {before.summary() if before else '-'}; "
        f"after {after.summary() if after else 'not run'}"
    )
    for test, error in after.failures if after else []:
        lines.append(f"  FAILED {test}: {error}")
    cases = sorted(set(before.fidelity if before else {}) | set(after.fidelity if after else {}))
    if cases:
        lines.append("golden cases, largest |ours - golden| score difference (before -> after):")
        for case in cases:
            a = before.fidelity.get(case) if before else None
            b = after.fidelity.get(case) if after else None
            lines.append(f"  {case:28s} {_format_diff(a)} -> {_format_diff(b)}")
    if report.patches:
        lines.append("patches:")
        for patch in report.patches:
            lines.append(f"  {patch.name:28s} {patch.state}: {patch.detail}")
            if patch.state != "applied":
                lines.append(f"  {'':28s} test: {patch.test}")
    return "\n".join(lines)


def _history_row(report: UpgradeReport) -> str:
    changes = ", ".join(f"{n} {a} → {b}" for n, a, b in report.changes) or "none"
    if report.after:
        tests = report.after.summary()
    else:
        tests = f"not run (before: {report.before.summary()})" if report.before else "not run"
    worst = [
        max(result.fidelity.values())
        for result in (report.before, report.after)
        if result and result.fidelity
    ]
    diff = " → ".join(f"{value:.3g}" for value in worst) or "-"
    if report.reason:
        outcome = ("kept (--keep): " if report.kept else "rolled back: ") + report.reason
    else:
        outcome = "kept" if report.changes else "no change"
    cells = [
        datetime.date.today().isoformat(),
        report.method,
        " ".join(report.requested) or "all",
        changes,
        tests,
        diff,
        outcome.replace("|", "/"),
    ]
    return "| " + " | ".join(cells) + " |"


def record_history(report: UpgradeReport, path: Path) -> None:
    """Append the upgrade to the history table in the ``upgrade-history`` block of ``path``."""
    row = _history_row(report)
    replace_block(path, "upgrade-history", lambda table: f"{table}\n{row}" if table else row)


def default_history(report: UpgradeReport) -> Path | None:
    """``docs/upgrading.md`` for the checkout's own packages; None for other method folders."""
    root = repo_root()
    if Path(report.project).parent != root / "packages":
        return None
    return root / "docs" / "upgrading.md"
