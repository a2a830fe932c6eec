"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from safehold.api.backup import BackupStatus

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

INVALID_MANIFESTS = Gauge(
    "safehold_catalog_invalid_manifests",
    "Catalog entries of the location's namespace that are not valid manifests (each also "
    "posted as a Warning Event on the location and shown as a Failed Backup).",
    ["namespace", "location"],
)

BACKUP_RUNS = Counter(
    "safehold_backup_runs_total",
    "Finished Backup runs by result (Succeeded, PartiallyFailed, Failed); policy is empty for "
    "backups made by hand.",
    ["namespace", "policy", "result"],
)
BACKUP_DURATION = Histogram(
    "safehold_backup_duration_seconds",
    "Duration of finished Backup runs.",
    ["namespace", "policy"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
BACKUP_BYTES = Gauge(
    "safehold_backup_size_bytes",
    "Payload size of the newest successful backup.",
    ["namespace", "policy"],
)
BACKUP_OBJECTS = Gauge(
    "safehold_backup_objects",
    "Kubernetes objects in the newest successful backup.",
    ["namespace", "policy"],
)
LAST_SUCCESS = Gauge(
    "safehold_backup_last_success_timestamp_seconds",
    "Completion time (Unix seconds) of the newest successful backup.",
    ["namespace", "policy"],
)
RPO_VIOLATED = Gauge(
    "safehold_policy_rpo_violated",
    "1 when the newest successful backup of the policy is older than its RPO, else 0.",
    ["namespace", "policy"],
)
POLICY_READY = Gauge(
    "safehold_policy_ready",
    "1 when the BackupPolicy is Ready, else 0.",
    ["namespace", "policy"],
)
MISSED_RUNS = Counter(
    "safehold_policy_missed_runs_total",
    "Scheduled runs that never started (operator down, past the deadline, or Forbid).",
    ["namespace", "policy"],
)
RETENTION_DELETIONS = Counter(
    "safehold_retention_deletions_total",
    "Backups deleted with their data, by why (Retention, FailedExpired, Requested, Expired, "
    "PolicyDeleted).",
    ["namespace", "policy", "reason"],
)
PRUNES = Counter(
    "safehold_repository_prunes_total",
    "restic prune runs per location by outcome (Succeeded, Failed).",
    ["namespace", "location", "result"],
)

# Scheduled repository checks of locations (engine/location_checks.py).
REPOSITORY_CHECKS = Counter(
    "safehold_repository_checks_total",
    "Scheduled repository checks per location by result (Passed, Damaged, Failed).",
    ["namespace", "location", "result"],
)
LOCATION_DEGRADED = Gauge(
    "safehold_location_degraded",
    "1 when the location's last repository check found data missing or damaged, else 0.",
    ["namespace", "location"],
)
CORRUPT_BACKUPS = Gauge(
    "safehold_location_corrupt_backups",
    "Backups the location's last repository check found damaged (marked Corrupt).",
    ["namespace", "location"],
)
REPOSITORY_CHECK_LAST_PASSED = Gauge(
    "safehold_repository_check_last_passed_timestamp_seconds",
    "When (Unix seconds) a repository check of the location last found no errors.",
    ["namespace", "location"],
)


def backup_finished(namespace: str, status: BackupStatus, outcome: str) -> None:
    """Record one finished run (called once by the Backup engine)."""
    policy = status.policy or ""
    BACKUP_RUNS.labels(namespace, policy, outcome).inc()
    if status.start_time and status.completion_time:
        seconds = (status.completion_time - status.start_time).total_seconds()
        BACKUP_DURATION.labels(namespace, policy).observe(max(seconds, 0.0))
    if outcome != "Succeeded":
        return
    if status.size_bytes is not None:
        BACKUP_BYTES.labels(namespace, policy).set(status.size_bytes)
    if status.resources is not None:
        BACKUP_OBJECTS.labels(namespace, policy).set(status.resources.total)
    if status.completion_time:
        LAST_SUCCESS.labels(namespace, policy).set(status.completion_time.timestamp())
