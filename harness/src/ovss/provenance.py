"""What every metrics file and sidecar records about how a result was made."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ovss.environments import MethodPackage, repo_root
from ovss_common.hashing import sha256_text

#: Fields of a worker's load reply that describe the model and how it runs.
LOAD_FIELDS = (
    "method",
    "package_version",
    "config",
    "config_sha256",
    "weights",
    "weights_sha256",
    "pipeline",
    "device",
    "dtype",
    "threads",
    "torch_version",
)


def vocabulary_sha256(names: list[str]) -> str:
    return sha256_text(json.dumps(names, ensure_ascii=False))


def git_commit() -> str | None:
    """The checkout's commit, with ``-dirty`` when tracked files have changes."""
    root = repo_root()
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def provenance(
    package: MethodPackage, load_info: dict[str, Any], vocabulary: list[str], **context: Any
) -> dict[str, Any]:
    """Method, package, lock, checkpoint, config, vocabulary and run context, in one dict.

    ``context`` adds run facts such as ``dataset``, ``label_space``, ``protocol``, ``definition``.
    """
    record = {key: load_info.get(key) for key in LOAD_FIELDS}
    record["method"] = package.name
    record["package_version"] = load_info.get("package_version") or package.version
    record["lock_sha256"] = package.lock_sha256()
    record["vocabulary_sha256"] = vocabulary_sha256(vocabulary)
    record.update(context)
    record["git_commit"] = git_commit()
    return record
