"""The Ray cluster a sweep runs on: join one, or start an embedded one on 127.0.0.1; the
resources a task asks for; the device names a task can use.

Ray is embedded (a local instance on 127.0.0.1 with ``workers`` CPU slots and Ray's dashboard
on 127.0.0.1) unless an address names a running cluster. Tasks take one GPU each where the
cluster has GPUs, one CPU slot otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ovss.errors import OvssError
from ovss_common.quiet import QUIET_ENV


def task_resources(cluster: dict[str, float], device: str | None = None) -> dict[str, float]:
    """The Ray resources of one task on a cluster with ``cluster``'s resources.

    One GPU where the cluster has one and ``device`` is not ``cpu`` (Ray then sets the task's
    ``CUDA_VISIBLE_DEVICES``, which its worker subprocess inherits, so ``cuda`` is that GPU); no
    CPU slot then, so that ``--workers`` does not cap the GPUs in use. One CPU slot otherwise.
    """
    if cluster.get("GPU", 0) >= 1 and device != "cpu":
        return {"num_gpus": 1, "num_cpus": 0}
    return {"num_cpus": 1}


def import_ray() -> Any:
    """The ``ray`` module, imported with usage statistics off and one log line per image."""
    os.environ.update(QUIET_ENV)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # one progress line per image (read at import)
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a harness dependency
        raise OvssError("ovss sweep needs ray in the harness environment (uv sync)") from None
    return ray


def _http(url: str | None) -> str | None:
    """A dashboard address as Ray gives it (``127.0.0.1:8265``) as a link; None for none."""
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def init_ray(workers: int, address: str | None = None, dashboard: bool = False) -> str | None:
    """Join the cluster at ``address``, or start an embedded one on 127.0.0.1 with ``workers``
    CPUs and, with ``dashboard``, Ray's dashboard on 127.0.0.1 (where it can start: a failure
    leaves Ray running without it).

    Returns the link to the dashboard of the Ray joined or started; None when it has none, or
    when Ray was already initialised in this process (nothing is started then).
    """
    if not address:
        # Keep an embedded Ray on the loopback interface: Ray otherwise replaces 127.0.0.1
        # with the host's reachable address unless "clusters" are disabled (read at import).
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = import_ray()
    if ray.is_initialized():
        return None
    if address:
        return _http(ray.init(address=address, log_to_driver=True).dashboard_url)
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False  # ray was imported before the variable was set
    context = ray.init(
        num_cpus=workers,
        # None: start the dashboard where its dependencies are installed, and go on without
        # it where it fails to start (True would make ray.init fail instead).
        include_dashboard=None if dashboard else False,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
    )
    return _http(context.dashboard_url)


def start_ray(workers: int, address: str | None, dashboard: bool) -> tuple[bool, str | None]:
    """``init_ray`` unless this process has joined a Ray already; prints the dashboard's link,
    or why there is none.

    Returns whether Ray was started here (the caller shuts it down) and the dashboard's link.
    """
    if import_ray().is_initialized():
        return False, None
    link = init_ray(workers, address, dashboard)
    if link:
        print(f"ovss: Ray dashboard at {link}", file=sys.stderr)
    elif dashboard and not address:
        print(
            "ovss: the Ray dashboard did not start (are ray[default]'s dependencies "
            "installed?); going on without it",
            file=sys.stderr,
        )
    return True, link


def check_device(device: str | None) -> None:
    """Refuse ``cuda:N``: a Ray task sees only the GPU Ray gave it."""
    if device and device.startswith("cuda:"):
        raise OvssError(
            f"--device {device}: a task sees only the GPU Ray gave it; use --device cuda"
        )
