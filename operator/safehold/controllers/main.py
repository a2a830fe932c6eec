"""`safehold operator`: run Kopf with Safehold's handlers."""

from __future__ import annotations

import hashlib
import logging
import os

import kopf
from prometheus_client import start_http_server

from safehold.controllers.memory import limit_malloc_arenas

log = logging.getLogger(__name__)


def peering_priority() -> int:
    """Kopf peering pauses every replica when two have the same priority: each replica takes
    one of its own (from its pod name), and the highest runs. Runs hold leases, so a replica
    that loses its turn mid-run never makes one run twice (engine/leases.py)."""
    name = f"{os.environ.get('HOSTNAME') or 'operator'}-{os.getpid()}"
    return int(hashlib.sha256(name.encode()).hexdigest()[:7], 16)


def run(
    namespace: list[str] | None,
    all_namespaces: bool,
    metrics_port: int,
    health_port: int,
    peering: str | None,
    bind_address: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from other pods
    gateway_port: int = 8082,
) -> int:
    """Run the operator until it is stopped; returns the exit code."""
    limit_malloc_arenas()  # before any thread starts
    import safehold.controllers.registry  # noqa: F401 - registers the handlers

    kopf.configure(verbose=False, log_format=kopf.LogFormat.JSON, log_prefix=True)
    if metrics_port:
        start_http_server(metrics_port, addr=bind_address)
    liveness = f"http://{bind_address}:{health_port}/healthz" if health_port else None
    kopf.run(
        clusterwide=not namespace,
        namespaces=namespace or (),
        liveness_endpoint=liveness,
        standalone=peering is None,
        peering_name=peering,
        priority=peering_priority(),
        memo=kopf.Memo(gateway_address=bind_address, gateway_port=gateway_port),
    )
    return 0
