"""The compatibility patches a method package carries, listed in its ``pyproject.toml``.

Each package lists every patch in one place::

    [[tool.ovss.patches]]
    name = "setuptools-below-81"
    kind = "pin"                          # "pin": a dependency requirement carries it;
    requirement = "setuptools<81"         # "prepare": a [tool.ovss.method] prepare step does
    written-for = "openai-clip==1.0.1"    # the release whose breakage it works around
    breaks = "openai-clip 1.0.1 imports pkg_resources: `import clip` fails"
    versions = "setuptools >= 81"         # the releases that break without it
    test = "tests/test_compat.py::test_openai_clip_imports"   # fails without the patch

After an upgrade, :func:`check_patches` says of each whether it still applies, and flags one
that may no longer be needed: its ``written-for`` release is no longer the locked one, or the
upgrade lifted a ``pin`` patch (its test then shows whether the new release still needs it).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ovss.errors import OvssError
from ovss.outdated import direct_dependencies, normalize, requirement_name

_FIELDS = ("name", "kind", "written-for", "breaks", "versions", "test")


@dataclass(frozen=True)
class Patch:
    """One compatibility patch of a package."""

    name: str
    kind: str
    written_for: str
    breaks: str
    versions: str
    test: str
    requirement: str = ""
    step: str = ""

    @property
    def package(self) -> str:
        """The normalized name of the release the patch was written for."""
        return normalize(self.written_for.partition("==")[0])

    @property
    def version(self) -> str:
        return self.written_for.partition("==")[2]


@dataclass(frozen=True)
class PatchStatus:
    """What an upgrade did to a patch: ``applied``, ``no longer applies`` or ``maybe not needed``."""

    name: str
    state: str
    detail: str
    test: str


def read_patches(project: Path) -> list[Patch]:
    """The ``[[tool.ovss.patches]]`` entries of ``project/pyproject.toml``."""
    pyproject = project / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    patches = []
    for entry in data.get("tool", {}).get("ovss", {}).get("patches", []):
        missing = [key for key in _FIELDS if not entry.get(key)]
        if missing:
            raise OvssError(f"{pyproject}: patch {entry.get('name', '?')!r} lacks {missing[0]}")
        kind = entry["kind"]
        if kind not in ("pin", "prepare") or not entry.get(
            "requirement" if kind == "pin" else "step"
        ):
            raise OvssError(
                f"{pyproject}: patch {entry['name']!r}: kind 'pin' needs requirement, "
                "kind 'prepare' needs step"
            )
        patches.append(
            Patch(
                name=entry["name"],
                kind=kind,
                written_for=entry["written-for"],
                breaks=entry["breaks"],
                versions=entry["versions"],
                test=entry["test"],
                requirement=entry.get("requirement", ""),
                step=entry.get("step", ""),
            )
        )
    return patches


def check_patches(
    project: Path, locked: dict[str, str], prepare_error: str | None
) -> list[PatchStatus]:
    """Each patch's state after an upgrade, given the new locked versions.

    ``prepare_error`` is the one-line failure of the package's prepare steps, if any (a
    ``prepare`` patch then no longer applies to the new release).
    """
    requirements = {dep.requirement.replace(" ", "") for dep in direct_dependencies(project)}
    statuses = []
    for patch in read_patches(project):
        now = locked.get(patch.package, "").split("+")[0]
        if patch.kind == "prepare" and prepare_error:
            state, detail = "no longer applies", prepare_error
        elif patch.kind == "pin" and patch.requirement.replace(" ", "") not in requirements:
            state = "maybe not needed"
            detail = f"this upgrade lifted {patch.requirement}: its test says if it is still needed"
        elif now and now != patch.version:
            state = "maybe not needed"
            detail = f"written for {patch.written_for}, {patch.package} is now {now}"
        else:
            state, detail = "applied", f"{patch.breaks} ({patch.versions})"
        statuses.append(PatchStatus(patch.name, state, detail, patch.test))
    return statuses


def pin_patches_by_package(project: Path) -> dict[str, Patch]:
    """The ``pin`` patches, by the normalized name of the dependency their requirement names."""
    return {
        requirement_name(patch.requirement): patch
        for patch in read_patches(project)
        if patch.kind == "pin"
    }
