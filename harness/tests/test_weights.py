"""``ovss weights list | fetch | import`` with the toy method's pinned, unreachable file."""

from __future__ import annotations

import pytest
from conftest import TOY_PROJECT

from ovss.cli import main

FIXTURE = TOY_PROJECT / "fixtures" / "weights.json"


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    folder = tmp_path / "cache"
    monkeypatch.setenv("OVSS_CACHE_DIR", str(folder))
    return folder


def _toy_line(capsys) -> str:
    assert main(["weights", "list", "--methods", "toy"]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if "toy_weights" in row]
    return line


def test_import_checks_the_file_then_caches_it(toy_package, tmp_path, cache, capsys):
    assert " missing sha256 pinned (published) | optional | http://127.0.0.1:9/" in _toy_line(
        capsys
    )
    wrong = tmp_path / "wrong.json"
    wrong.write_text("{}")
    assert main(["weights", "import", "toy_weights", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert f"{wrong}: sha256" in err and "another file" in err and err.count("\n") == 1
    assert main(["weights", "import", "toy_weights", str(FIXTURE), "--method", "toy"]) == 0
    stored = cache / "weights" / "toy" / "toy_weights.json"
    assert capsys.readouterr().out.strip() == f"toy_weights (toy) -> {stored}"
    assert stored.read_bytes() == FIXTURE.read_bytes()
    assert " cached " in _toy_line(capsys)
    fetch = ["weights", "fetch", "toy_weights", "--method", "toy"]
    assert main(fetch) == 0  # cached: verified, not downloaded


def test_fetch_offline_and_unknown_names_are_one_line(toy_package, monkeypatch, capsys):
    monkeypatch.setenv("OVSS_OFFLINE", "1")
    assert main(["weights", "fetch", "toy_weights", "--method", "toy"]) == 2
    err = capsys.readouterr().err
    assert "OVSS_OFFLINE is set" in err and err.strip().count("\n") == 0
    assert main(["weights", "fetch", "no_such", "--method", "toy"]) == 2
    assert "no weights named 'no_such' in method toy" in capsys.readouterr().err
