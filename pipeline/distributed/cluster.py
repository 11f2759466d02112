"""Connecting to Ray: a local instance by default, a cluster with `--address` or RAY_ADDRESS.

    ray_module = connect(address=None)      # local Ray on this machine (loopback only)
    connect(address="ray-head:6379")       # join a running cluster (`ray start --head` there)

Workers get foldwise's own code through the runtime environment (`py_modules`: the driver's
`pipeline` and `serve` packages), so every node runs exactly the driver's code; the nodes need
only the same third-party packages (torch, timm, onnxruntime, ...) installed.
"""
from __future__ import annotations

import logging
import os
from types import ModuleType

from serve.errors import UserError, first_line

_logger = logging.getLogger(__name__)
INSTALL_HINT = "pip install -e '.[ray]'"


def import_ray() -> ModuleType:
    """The `ray` module, or a one-line UserError saying how to install the optional extra."""
    try:
        import ray
    except ImportError:
        raise UserError(f"Ray is not installed: it is an optional extra ({INSTALL_HINT})") from None
    return ray


def runtime_env() -> dict:
    """Ship this checkout's `pipeline` and `serve` packages to every worker (no shared filesystem)."""
    import pipeline
    import serve
    return {"py_modules": [pipeline, serve], "excludes": ["__pycache__", "*.pyc"]}


def connect(address: str | None = None, num_cpus: int | None = None) -> ModuleType:
    """`ray.init` once: `address` (or RAY_ADDRESS) joins a cluster; otherwise a local instance.

    A local instance listens on the loopback interface only and has no dashboard; `num_cpus`
    caps its CPUs (default: all cores).
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = {"runtime_env": runtime_env(), "logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    except ConnectionError as exc:
        raise UserError(f"--address {address}: cannot reach a Ray cluster there "
                        f"({first_line(exc, 160)})") from None
    resources = ray.cluster_resources()
    _logger.info("Ray %s: %d node(s), %g CPUs, %g GPUs", "cluster at " + address if address else "local instance",
                 len([n for n in ray.nodes() if n.get("Alive")]), resources.get("CPU", 0), resources.get("GPU", 0))
    return ray


def node_id() -> str:
    """This worker's Ray node id (short), to say where a task ran."""
    ray = import_ray()
    return ray.get_runtime_context().get_node_id()[:8]
