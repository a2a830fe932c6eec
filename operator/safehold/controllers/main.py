"""`safehold operator`: run Kopf with Safehold's handlers."""

from __future__ import annotations

import logging

import kopf
from prometheus_client import start_http_server

from safehold.controllers.memory import limit_malloc_arenas

log = logging.getLogger(__name__)


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
        memo=kopf.Memo(gateway_address=bind_address, gateway_port=gateway_port),
    )
    return 0
