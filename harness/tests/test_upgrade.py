"""ovss upgrade / ovss outdated against a local package index, offline.

Each test copies the toy method into tmp_path, makes it depend on ``ovss-tinydep`` (wheels
written here: 1.0, 1.1 moves the toy's "golden" number within tolerance, 2.0 beyond it, 3.0
fails to import) and drives the upgrade with ``UV_OFFLINE=1``, ``UV_NO_INDEX=1`` and the local
``--find-links`` folder (pytest and its dependencies are re-packed from this environment).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, TOY_PROJECT

from ovss.cli import main
from ovss.environments import uv_executable
from ovss.errors import OvssError
from ovss.markdown import markers
from ovss.outdated import locked_versions
from ovss.patches import check_patches, read_patches
from ovss.upgrade import format_report, record_history, upgrade

HISTORY_START, HISTORY_END = markers("upgrade-history")

TINYDEP = {"1.0": "GAIN = 1.0\n", "1.1": "GAIN = 1.00001\n", "2.0": "GAIN = 1.5\n"}
TINYDEP["3.0"] = 'raise ImportError("ovss_tinydep 3.0 dropped GAIN")\n'
PYTEST_DISTRIBUTIONS = ("pytest", "iniconfig", "pluggy", "packaging", "pygments")

GOLDEN_TEST = """\
import json
import os

from ovss_tinydep import GAIN


def test_golden_output_matches():
    ours, golden = 3.0 * GAIN, 3.0
    diff = abs(ours - golden)
    if os.environ.get("OVSS_FIDELITY_REPORT"):
        with open(os.environ["OVSS_FIDELITY_REPORT"], "a") as file:
            line = {"case": "case_a", "quantity": "scores", "max_abs_diff": diff}
            file.write(json.dumps(line) + "\\n")
    assert diff <= 1e-3, f"case_a: max |diff| {diff:.3g} over tolerance"
"""

PYPROJECT = """\
[project]
name = "ovss-{name}"
version = "0.0.1"
requires-python = ">=3.11,<3.12"
dependencies = ["ovss-tinydep<3"]

[dependency-groups]
dev = ["pytest>=8"]

[tool.uv]
environments = ["sys_platform == 'linux'"]

[tool.ovss.method]
name = "{name}"
worker = "ovss_toy.worker"

[[tool.ovss.patches]]
name = "tinydep-below-3"
kind = "pin"
requirement = "ovss-tinydep<3"
written-for = "ovss-{name}==0.0.1"
breaks = "ovss_tinydep 3 no longer defines GAIN"
versions = "ovss-tinydep >= 3"
test = "tests/test_golden.py::test_golden_output_matches"

[build-system]
requires = ["uv_build>=0.13.0,<0.14"]
build-backend = "uv_build"

[tool.uv.build-backend]
module-name = "ovss_toy"
"""


def _write_wheel(folder: Path, name: str, version: str, files: dict[str, bytes], tag: str) -> None:
    """A wheel of ``files`` (paths relative to site-packages) with a fresh RECORD."""
    stem = name.replace("-", "_").lower()
    dist_info = f"{stem}-{version}.dist-info"
    files = dict(files)
    files.setdefault(
        f"{dist_info}/METADATA",
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
    )
    files.setdefault(
        f"{dist_info}/WHEEL",
        f"Wheel-Version: 1.0\nGenerator: ovss-tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode(),
    )
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{stem}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)


def _repack_installed(folder: Path, name: str) -> None:
    """A wheel of an installed pure-Python distribution of this environment."""
    dist = importlib.metadata.distribution(name)
    files = {}
    for entry in dist.files or []:
        path = str(entry)
        if path.startswith("..") or "__pycache__" in path or path.endswith("/RECORD"):
            continue
        files[path] = Path(dist.locate_file(entry)).read_bytes()
    _write_wheel(folder, dist.metadata["Name"], dist.version, files, "py3-none-any")


@pytest.fixture(scope="module")
def links(tmp_path_factory) -> Path:
    """The local index: ovss-tinydep 1.0 / 1.1 / 2.0 / 3.0 and pytest with its dependencies."""
    folder = tmp_path_factory.mktemp("links")
    for version, body in TINYDEP.items():
        files = {"ovss_tinydep/__init__.py": body.encode()}
        _write_wheel(folder, "ovss-tinydep", version, files, "py3-none-any")
    for name in PYTEST_DISTRIBUTIONS:
        _repack_installed(folder, name)
    return folder


@pytest.fixture
def offline_index(monkeypatch, tmp_path, links) -> Path:
    """uv offline, no index, the local links folder; a private OVSS cache."""
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(links))
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")
    monkeypatch.setenv("OVSS_CACHE_DIR", str(tmp_path / "cache"))
    return links


def _uv(*args: str) -> None:
    subprocess.run([uv_executable(), *args], check=True, capture_output=True)


def _toy_copy(root: Path, name: str) -> Path:
    """A copy of the toy method named ``name``, locked on ovss-tinydep 1.0 and synced."""
    project = root / name
    shutil.copytree(TOY_PROJECT / "src", project / "src")
    (project / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    (project / "tests").mkdir()
    (project / "tests" / "test_golden.py").write_text(GOLDEN_TEST)
    _uv("lock", "--project", str(project), "--upgrade-package", "ovss-tinydep==1.0")
    _uv("sync", "--locked", "--project", str(project))
    return project


@pytest.fixture
def toys(offline_index, monkeypatch, tmp_path) -> tuple[Path, Path]:
    """Two toy copies registered as methods: ``toyup`` (upgraded) and ``toyother``."""
    upgraded, other = _toy_copy(tmp_path, "toyup"), _toy_copy(tmp_path, "toyother")
    monkeypatch.setenv("OVSS_METHOD_DIRS", f"{upgraded}{os.pathsep}{other}")
    return upgraded, other


def _installed_tinydep(project: Path) -> str:
    found = list((project / ".venv").glob("lib/python*/site-packages/ovss_tinydep-*.dist-info"))
    assert len(found) == 1, found
    return found[0].name.removesuffix(".dist-info").split("-")[1]


def _snapshot(project: Path) -> tuple[bytes, bytes, str]:
    lock = (project / "uv.lock").read_bytes()
    return lock, (project / "pyproject.toml").read_bytes(), _installed_tinydep(project)


def test_good_upgrade_is_kept_with_a_report(toys, tmp_path):
    upgraded, other = toys
    other_before = _snapshot(other)
    report = upgrade("toyup", ["ovss-tinydep==1.1"])
    assert report.ok, report.reason
    assert report.changes == [("ovss-tinydep", "1.0", "1.1")]
    assert report.before.fidelity == {"case_a": 0.0}
    assert report.after.fidelity["case_a"] == pytest.approx(3e-5, rel=1e-3)
    assert report.after.passed == 1 and report.after.failed == 0
    assert 'version = "1.1"' in (upgraded / "uv.lock").read_text()
    assert _installed_tinydep(upgraded) == "1.1"
    assert _snapshot(other) == other_before
    text = format_report(report)
    assert "KEPT" in text and "ovss-tinydep" in text and "1.0 -> 1.1" in text
    assert "case_a" in text and "0 -> 3e-05" in text
    assert "tinydep-below-3" in text and "applied" in text
    history = tmp_path / "upgrading.md"
    history.write_text(f"# t\n\n| h |\n|---|\n{HISTORY_START}\n{HISTORY_END}\n")
    record_history(report, history)
    row = history.read_text().splitlines()[-2]
    assert "toyup" in row and "ovss-tinydep 1.0 → 1.1" in row and "| kept |" in row


def test_breaking_upgrade_is_rolled_back_byte_identical(toys):
    upgraded, other = toys
    before, other_before = _snapshot(upgraded), _snapshot(other)
    report = upgrade("toyup", ["ovss-tinydep==2.0"])
    assert not report.ok and not report.kept
    assert report.changes == [("ovss-tinydep", "1.0", "2.0")]
    assert "tests/test_golden.py::test_golden_output_matches" in report.reason
    assert "max |diff| 1.5 over tolerance" in report.reason
    assert report.lock_identical is True
    assert _snapshot(upgraded) == before
    assert _snapshot(other) == other_before
    assert report.after.fidelity == {"case_a": 1.5}


def test_keep_leaves_a_failing_upgrade_in_place(toys):
    upgraded, _ = toys
    report = upgrade("toyup", ["ovss-tinydep==2.0"], keep=True)
    assert report.kept and not report.ok and report.reason
    assert _installed_tinydep(upgraded) == "2.0"
    assert "KEPT FOR INVESTIGATION" in format_report(report)


def test_cli_rolls_back_an_import_breaking_release_that_lifts_a_patch(
    toys, offline_index, monkeypatch, capsys, tmp_path
):
    upgraded, other = toys
    monkeypatch.delenv("UV_FIND_LINKS")
    before, other_before = _snapshot(upgraded), _snapshot(other)
    history = tmp_path / "history.md"
    history.write_text(f"{HISTORY_START}\n{HISTORY_END}\n")
    argv = ["upgrade", "--method", "toyup", "--package", "ovss-tinydep==3.0"]
    argv += ["--find-links", str(offline_index), "--history", str(history)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "ROLLED BACK" in out and "byte-identical" in out
    assert "ImportError: ovss_tinydep 3.0 dropped GAIN" in out
    assert "tinydep-below-3" in out and "lifted ovss-tinydep<3" in out
    assert _snapshot(upgraded) == before
    assert _snapshot(other) == other_before
    assert "rolled back" in history.read_text()


def test_bad_requests_are_one_line_errors(toys, monkeypatch, capsys):
    with pytest.raises(OvssError, match="unknown method 'nope'"):
        upgrade("nope")
    with pytest.raises(OvssError, match="unknown package 'requests'"):
        upgrade("toyup", ["requests"])
    with pytest.raises(OvssError, match="expected NAME or NAME==VERSION"):
        upgrade("toyup", ["ovss-tinydep>=2"])
    monkeypatch.delenv("UV_FIND_LINKS")
    assert main(["upgrade", "--method", "toyup"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ovss: error: offline") and "\n" not in err


def test_outdated_offline_says_so_in_one_line(toys, capsys):
    assert main(["outdated", "toyup", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().count("\n") == 0 and "offline" in captured.err
    rows = {row["package"]: row for row in json.loads(captured.out)}
    assert rows["ovss-tinydep"]["locked"] == "1.0" and rows["ovss-tinydep"]["newest"] == "?"
    assert rows["pytest"]["group"] == "dev"
    assert main(["outdated", "nope"]) == 2


def test_every_real_package_lists_its_patches_with_a_test():
    for method, expected in {
        "san": {"detectron2-0.6"},
        "ovseg": {"detectron2-0.6", "setuptools-below-81"},
        "car": {"setuptools-below-81", "opencv-4-circle-prompt"},
    }.items():
        project = REPO / "packages" / method
        patches = read_patches(project)
        assert {patch.name for patch in patches} == expected
        for patch in patches:
            assert (project / patch.test.split("::")[0]).is_file(), patch.test
        statuses = check_patches(project, locked_versions(project), None)
        assert {status.state for status in statuses} == {"applied"}, statuses
