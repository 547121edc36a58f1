"""One isolated environment per method package, built from its own lock."""

import shutil

import pytest
from conftest import REPO, TOY_PROJECT

from ovss.cli import main
from ovss.environments import (
    discover_methods,
    ensure_environment,
    environment_status,
    read_method_package,
)
from ovss.errors import OvssError


def test_discovery_finds_declared_methods_only():
    methods = discover_methods()
    assert "toy" in methods and "common" not in methods
    assert methods["toy"].worker_module == "ovss_toy.worker"


def test_methods_command_lists_known_and_found(toy_package, capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "environment: ready" in out
    assert "san" in out and "ovseg" in out and "car" in out


@pytest.fixture
def toy_copy(tmp_path):
    """A copy of the toy project at the same depth, so its relative path to common holds."""
    (tmp_path / "packages").mkdir()
    (tmp_path / "packages" / "common").symlink_to(REPO / "packages" / "common")
    project = tmp_path / "a" / "b" / "toy"
    shutil.copytree(TOY_PROJECT, project, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    return read_method_package(project)


def test_missing_environment_is_built_from_the_lock(toy_copy):
    assert environment_status(toy_copy) == "missing"
    python = ensure_environment(toy_copy)
    assert python.is_file() and environment_status(toy_copy) == "ready"
    site = next(toy_copy.venv.glob("lib/python3.11/site-packages"))
    shutil.rmtree(next(site.glob("pillow-*.dist-info")))
    assert environment_status(toy_copy) == "out of sync"
    ensure_environment(toy_copy)
    assert environment_status(toy_copy) == "ready"


def test_stale_lock_is_a_clear_error(toy_copy):
    pyproject = toy_copy.project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy>=2.0"', '"numpy>=2.0", "six"'))
    with pytest.raises(OvssError, match="building the toy environment failed"):
        ensure_environment(toy_copy)


def test_missing_lock(toy_copy):
    (toy_copy.project / "uv.lock").unlink()
    assert environment_status(toy_copy) == "no lock"
    with pytest.raises(OvssError, match=r"no uv\.lock"):
        ensure_environment(toy_copy)
