"""``ovss weights list | fetch NAME | import NAME FILE``: the weights files of every method's zoo.

- ``list``: every entry with its method, source, how it is checked and whether it is cached;
- ``fetch NAME``: download it into the cache now (checked as on first use);
- ``import NAME FILE``: put a file obtained by other means (a browser, a USB stick) into the
  cache, checked first against the published digest, so that an offline machine can be set up.

Each runs in the method's own environment (``python -m ovss_common.models``); the harness
imports no method.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from ovss.environments import (
    MethodPackage,
    discover_methods,
    ensure_environment,
    get_method,
    zoo_listing,
)
from ovss.errors import OvssError
from ovss.worker import worker_environment

HELP = "list, fetch or import the weights files of every method"


def _owner(name: str, method: str | None) -> MethodPackage:
    """The method whose zoo has a weights file ``name`` (``method`` when given)."""
    packages = [get_method(method)] if method else list(discover_methods().values())
    owners = [p for p in packages if any(row["name"] == name for row in zoo_listing(p))]
    if not owners:
        where = f"method {method}" if method else "any method"
        raise OvssError(f"no weights named {name!r} in {where} ('ovss weights list' lists them)")
    if len(owners) > 1:
        names = ", ".join(p.name for p in owners)
        raise OvssError(f"weights {name!r} belong to {names}: say which with --method")
    return owners[0]


def _store(package: MethodPackage, *flags: str) -> Path:
    python = ensure_environment(package)
    command = [str(python), "-m", "ovss_common.models", str(package.models_module), *flags]
    # stderr stays the terminal's: a download says what it fetches from where.
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=worker_environment())
    lines = done.stdout.strip().splitlines()
    reply = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or "path" not in reply:
        raise OvssError(reply.get("error") or f"storing {flags[1]} in {package.name} failed")
    return Path(reply["path"])


def list_weights(methods: list[str] | None) -> list[str]:
    """One line per weights file of every method (or of ``methods``)."""
    names = methods or sorted(discover_methods())
    lines = []
    for name in names:
        for row in zoo_listing(get_method(name)):
            state = "cached " if row["cached"] else "missing"
            models = ", ".join(row["models"]) or "optional"
            lines.append(
                f"{name:6} {row['name']:28} {state} {row['digest']} | {models} | {row['url']}"
            )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every weights file, its source, check and state")
    listing.add_argument("--methods", nargs="+", metavar="METHOD", help="default: every method")
    fetch = actions.add_parser("fetch", help="download a weights file into the cache now")
    fetch.add_argument("name")
    fetch.add_argument("--method", help="when several methods have a file of that name")
    imported = actions.add_parser("import", help="put a file you downloaded into the cache")
    imported.add_argument("name")
    imported.add_argument("file", type=Path)
    imported.add_argument("--method", help="when several methods have a file of that name")


def command(args: argparse.Namespace) -> int:
    if args.action == "list":
        for line in list_weights(args.methods):
            print(line)
        return 0
    package = _owner(args.name, args.method)
    if args.action == "fetch":
        path = _store(package, "--fetch", args.name)
    else:
        path = _store(package, "--import", args.name, str(args.file.resolve()))
    print(f"{args.name} ({package.name}) -> {path}")
    return 0
