"""The detectron2 0.6 patch set applies, patch by patch, to the pinned sdist."""

import json
import py_compile

import pytest

from ovss_common import detectron2_compat as compat


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return compat.prepare(tmp_path_factory.mktemp("build") / "detectron2-0.6")


def test_record_lists_every_patch(prepared):
    record = json.loads((prepared / compat.RECORD).read_text())
    assert record["patches"] == [p.name for p in compat.PATCHES]
    assert record["sha256"] == compat.SDIST_SHA256 and record["digest"] == compat.patch_set_digest()


@pytest.mark.parametrize("patch", compat.PATCHES, ids=lambda p: p.name)
def test_each_patch_is_in_the_tree(prepared, patch):
    for edit in patch.edits:
        text = (prepared / edit.file).read_text()
        assert edit.new in text or not edit.new, edit
        if edit.old not in edit.new:
            assert edit.old not in text, edit
    for name in patch.add:
        assert (prepared / name).is_file()
    for name in patch.remove:
        assert not (prepared / name).exists()


def test_no_known_breakage_is_left(prepared):
    sources = {p: p.read_text() for p in (prepared / "detectron2").rglob("*.py")}
    for path, text in sources.items():
        py_compile.compile(str(path), doraise=True, cfile=str(path) + ".check")
        assert "from detectron2 import _C" not in text, path
        assert "Image.LINEAR" not in text and "pkg_resources" not in text, path
        for alias in ("np.int)", "np.float)", "np.bool)", "np.str)"):
            assert alias not in text, (path, alias)
    assert not (prepared / "setup.py").exists()
    assert (
        f'version = "0.6+ovss.{compat.patch_set_digest()}"'
        in (prepared / "pyproject.toml").read_text()
    )


def test_prepare_is_idempotent(prepared):
    stamp = (prepared / compat.RECORD).stat().st_mtime_ns
    assert compat.prepare(prepared) == prepared
    assert (prepared / compat.RECORD).stat().st_mtime_ns == stamp


def test_an_unexpected_tree_is_refused(tmp_path):
    tree = tmp_path / "tree"
    (tree / "detectron2").mkdir(parents=True)
    with pytest.raises(compat.PatchError, match="is missing from the sdist"):
        compat.apply_patches(tree)
    first = compat.PATCHES[1].edits[0]
    (tree / first.file).parent.mkdir(parents=True, exist_ok=True)
    (tree / first.file).write_text("nothing to patch here\n")
    with pytest.raises(compat.PatchError, match="0 occurrence"):
        compat.apply_patches(tree)
