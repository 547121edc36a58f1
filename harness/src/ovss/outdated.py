"""``ovss outdated``: each project's direct dependencies, locked and newest versions.

The locked versions come from the project's ``uv.lock`` (read with tomllib); the newest version
from the package index's JSON simple API (PEP 691/700) at ``$UV_DEFAULT_INDEX``,
``$UV_INDEX_URL`` or ``$PIP_INDEX_URL`` (else PyPI): its newest final release (pre-, dev- and
local versions are left out; yanked releases are not told apart).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ovss.environments import discover_methods, repo_root
from ovss.errors import OvssError
from ovss_common.downloads import index_url

_JSON_SIMPLE = "application/vnd.pypi.simple.v1+json"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)")
_FINAL = re.compile(r"^(?:(\d+)!)?(\d+(?:\.\d+)*)(?:\.?post(\d+))?$")


def normalize(name: str) -> str:
    """A distribution name in its PEP 503 normal form (``PyYAML`` -> ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def release_key(version: str) -> tuple | None:
    """A sort key for a final release (``1!2.0.post1``), None for pre, dev and local versions."""
    match = _FINAL.match(version.strip())
    if match is None:
        return None
    epoch, release, post = match.groups()
    parts = [int(p) for p in release.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return (int(epoch or 0), tuple(parts), int(post) if post else -1)


def requirement_name(requirement: str) -> str:
    """The normalized distribution name a PEP 508 requirement string names."""
    match = _NAME.match(requirement)
    if match is None:
        raise OvssError(f"unreadable requirement {requirement!r}")
    return normalize(match.group(1))


@dataclass(frozen=True)
class Dependency:
    """One direct dependency as ``pyproject.toml`` states it."""

    name: str
    requirement: str
    specifier: str
    group: str


def direct_dependencies(project: Path) -> list[Dependency]:
    """The project's ``[project] dependencies`` and dependency groups, in file order."""
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    sections = [("main", data.get("project", {}).get("dependencies", []))]
    sections += list(data.get("dependency-groups", {}).items())
    found = []
    for group, requirements in sections:
        for requirement in requirements:
            if not isinstance(requirement, str):
                continue
            match = _NAME.match(requirement)
            if match is None:
                raise OvssError(
                    f"{project / 'pyproject.toml'}: unreadable requirement {requirement!r}"
                )
            name, _, specifier = match.groups()
            found.append(Dependency(normalize(name), requirement, specifier.strip(), group))
    return found


def locked_packages(project: Path) -> dict[str, dict]:
    """Every package entry of ``project/uv.lock``, by normalized name."""
    lock = project / "uv.lock"
    if not lock.is_file():
        raise OvssError(f"{project}: no uv.lock")
    data = tomllib.loads(lock.read_text(encoding="utf-8"))
    return {normalize(entry["name"]): entry for entry in data.get("package", [])}


def locked_versions(project: Path) -> dict[str, str]:
    """``{name: version}`` of every package in ``project/uv.lock``."""
    return {name: entry.get("version", "") for name, entry in locked_packages(project).items()}


def is_offline() -> bool:
    """True when uv or OVSS is told not to use the network."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("UV_OFFLINE", "OVSS_OFFLINE"))


def newest_version(name: str, timeout: float = 30.0) -> str:
    """The newest final release of ``name`` on the package index.

    Raises:
        OvssError: the index cannot be read, or lists no final release.
    """
    page = f"{index_url()}/{normalize(name)}/"
    request = urllib.request.Request(page, headers={"Accept": _JSON_SIMPLE})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            listing = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise OvssError(f"cannot read {page}: {exc}") from None
    versions = [v for v in listing.get("versions", []) if release_key(v) is not None]
    if not versions:
        raise OvssError(f"{page} lists no final release")
    return max(versions, key=release_key)


@dataclass(frozen=True)
class Row:
    """One line of the ``ovss outdated`` table."""

    project: str
    package: str
    group: str
    specifier: str
    locked: str
    newest: str
    status: str


def _status(locked: str, newest: str | None, local: bool) -> str:
    if local:
        return "local"
    if newest is None:
        return "unknown"
    old, new = release_key(locked.split("+")[0]), release_key(newest)
    if old is None or new is None:
        return "unknown"
    return "outdated" if new > old else "up to date"


def default_projects() -> dict[str, Path]:
    """The method packages (san, ovseg, car and any in ``$OVSS_METHOD_DIRS``) and the harness."""
    projects = {name: package.project for name, package in sorted(discover_methods().items())}
    projects["harness"] = repo_root() / "harness"
    return projects


def outdated(projects: dict[str, Path], online: bool = True) -> tuple[list[Row], list[str]]:
    """Rows for every direct dependency of ``projects``, and the lookups that failed.

    With ``online`` False (offline) no index is asked and ``newest`` is ``"?"``.
    """
    listed = []
    for label, project in projects.items():
        packages = locked_packages(project)
        for dependency in direct_dependencies(project):
            entry = packages.get(dependency.name, {})
            source = entry.get("source", {})
            local = bool(source) and "registry" not in source
            listed.append((label, dependency, entry.get("version", "not locked"), local))
    names = sorted({dep.name for _, dep, _, local in listed if not local}) if online else []
    errors: list[str] = []

    def lookup(name: str) -> str | None:
        try:
            return newest_version(name)
        except OvssError as error:
            errors.append(f"{name}: {error}")
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        newest = dict(zip(names, pool.map(lookup, names), strict=True))
    rows = [
        Row(
            project=label,
            package=dep.name,
            group=dep.group,
            specifier=dep.specifier or "*",
            locked=locked,
            newest="local" if local else newest.get(dep.name) or "?",
            status=_status(locked, newest.get(dep.name), local),
        )
        for label, dep, locked, local in listed
    ]
    return rows, sorted(errors)


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned plain-text table."""
    header = ("project", "package", "group", "specifier", "locked", "newest", "status")
    cells = [header] + [
        (r.project, r.package, r.group, r.specifier, r.locked, r.newest, r.status) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def to_json(rows: list[Row]) -> str:
    """The rows as a JSON list of objects."""
    return json.dumps([asdict(row) for row in rows], indent=1)
