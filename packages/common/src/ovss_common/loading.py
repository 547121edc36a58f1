"""What every method worker's ``load`` does the same way: check options, resolve released
weights through the zoo, turn build errors into structured errors, describe the model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ovss_common.checkpoints import CheckpointError
from ovss_common.hashing import sha256_file, sha256_text
from ovss_common.protocol import LoadRequest, WorkerError
from ovss_common.zoo import WeightsEntry, WeightsError, fetch


def check_options(options: dict[str, Any], allowed: tuple[str, ...], method: str) -> None:
    """Refuse an option the method does not know."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise WorkerError("bad_option", f"unknown {method} option {unknown[0]!r}", unknown[0])


def config_overrides(options: dict[str, Any]) -> list[str]:
    """The ``overrides`` option: a flat list of ``KEY VALUE`` pairs, as strings."""
    overrides = options.get("overrides", [])
    if not isinstance(overrides, list) or len(overrides) % 2:
        raise WorkerError("bad_option", "overrides must be a list of KEY VALUE pairs", "overrides")
    return [str(item) for item in overrides]


def use_random_weights(options: dict[str, Any], weights: str | None) -> bool:
    """The ``random_weights`` option: build the full-size architecture with random
    initialisation instead of loading weights (nothing is downloaded). When it is on, torch's
    generator is seeded with 0 so that every random build is the same."""
    value = options.get("random_weights", False)
    if not isinstance(value, bool):
        raise WorkerError("bad_option", "random_weights must be true or false", "random_weights")
    if value and weights is not None:
        raise WorkerError(
            "bad_option", "random_weights and weights exclude each other", "random_weights"
        )
    if value:
        import torch

        torch.manual_seed(0)
    return value


def released_weights(entry: WeightsEntry) -> str:
    """The local path of a released file (downloaded once), or a one-line ``bad_checkpoint``."""
    try:
        return str(fetch(entry))
    except WeightsError as exc:
        raise WorkerError("bad_checkpoint", str(exc), entry.url) from None


@contextlib.contextmanager
def build_errors(
    config: str, weights: str | None, config_errors: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Map what building a model raises to ``bad_checkpoint`` / ``bad_config`` errors."""
    if not Path(config).is_file():
        raise WorkerError("bad_config", f"{config}: no such config file", config)
    try:
        yield
    except CheckpointError as exc:
        raise WorkerError("bad_checkpoint", str(exc), weights) from None
    except (KeyError, ValueError, TypeError, *config_errors) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkerError("bad_config", f"{config}: {message}", config) from None


def model_provenance(
    distribution: str, request: LoadRequest, config: str, config_text: str, weights: str | None
) -> dict[str, Any]:
    """The load facts every method reports (the method adds its own)."""
    return {
        "package_version": version(distribution),
        "config": str(config),
        "config_sha256": sha256_text(config_text),
        "weights": weights,
        "weights_sha256": sha256_file(weights) if weights else None,
        "random_weights": weights is None,
        "dtype": request.dtype,
        "pipeline": request.pipeline,
    }
