"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LOCATION_READY = Gauge(
    "safehold_location_ready",
    "1 when the BackupStorageLocation's last probe succeeded, else 0.",
    ["namespace", "location"],
)
LOCATION_PROBES = Counter(
    "safehold_location_probes_total",
    "Probes of BackupStorageLocations by outcome reason.",
    ["namespace", "location", "reason"],
)
