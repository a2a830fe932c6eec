"""Prometheus metrics of the operator."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from threading import Lock

from prometheus_client import Counter, Gauge, Histogram

from safehold.api.backup import BackupStatus
from safehold.api.verification import CheckStatus, VerificationReference

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


# --- restore drills (BackupVerification) ---------------------------------------------------
# policy is "" for a drill by hand of a backup that belongs to no policy.

DRILL_RUNS = Counter(
    "safehold_drill_runs_total",
    "Finished restore drills by result (Passed, Failed).",
    ["namespace", "policy", "result"],
)
DRILL_LAST_RESULT = Gauge(
    "safehold_drill_last_result",
    "1 when the policy's last finished restore drill passed every check, 0 when it failed.",
    ["namespace", "policy"],
)
DRILL_LAST_SUCCESS = Gauge(
    "safehold_drill_last_success_timestamp_seconds",
    "Completion time (Unix seconds) of the policy's last restore drill that passed.",
    ["namespace", "policy"],
)
DRILL_RESTORE_SECONDS = Gauge(
    "safehold_drill_restore_seconds",
    "Restore time (achieved RTO) measured by the policy's last drill that measured one.",
    ["namespace", "policy"],
)
DRILL_CHECK_RESULT = Gauge(
    "safehold_drill_check_result",
    "Per check of the policy's last drill: 1 passed, 0 failed; no series for a check that "
    "was skipped or not run.",
    ["namespace", "policy", "check"],
)
RTO_TARGET = Gauge(
    "safehold_policy_rto_target_seconds",
    "The policy's verification.rtoTarget in seconds (no series when it has none).",
    ["namespace", "policy"],
)

_drill_lock = Lock()
# The check series each (namespace, policy) has, so that a check the next drill skips or no
# longer runs (a renamed probe) leaves no stale verdict behind.
_drill_checks: dict[tuple[str, str], set[str]] = {}


def observe_drill(
    namespace: str,
    policy: str | None,
    result: str,
    restore_seconds: float | None,
    checks: Sequence[CheckStatus],
    finished: datetime,
) -> None:
    """Record one finished drill (called once by the drill engine). `result` is Passed or
    Failed; `restore_seconds` is None when the drill measured no restore time."""
    key = (namespace, policy or "")
    passed = result == "Passed"
    verdicts = {c.name: c.result == "Passed" for c in checks if c.result != "Skipped"}
    with _drill_lock:
        DRILL_RUNS.labels(*key, result).inc()
        DRILL_LAST_RESULT.labels(*key).set(1 if passed else 0)
        if passed:
            DRILL_LAST_SUCCESS.labels(*key).set(finished.timestamp())
        if restore_seconds is not None:
            DRILL_RESTORE_SECONDS.labels(*key).set(max(restore_seconds, 0.0))
        for stale in _drill_checks.get(key, set()) - verdicts.keys():
            DRILL_CHECK_RESULT.remove(*key, stale)
        for name, ok in verdicts.items():
            DRILL_CHECK_RESULT.labels(*key, name).set(1 if ok else 0)
        _drill_checks[key] = set(verdicts)


def observe_rto_target(namespace: str, policy: str, seconds: float | None) -> None:
    """The policy's RTO target, so alerts can compare the measured RTO with it (called on
    every evaluation of the policy); None removes the series."""
    if seconds is None:
        RTO_TARGET.remove(namespace, policy)  # a no-op when there is none
    else:
        RTO_TARGET.labels(namespace, policy).set(seconds)


def seed_last_drill(namespace: str, policy: str, last: VerificationReference | None) -> None:
    """The last drill's gauges from the policy's status.lastVerification, so that an operator
    restart does not blank them until the next drill (optional; call it on every evaluation
    of the policy). Sets nothing once a drill of the policy was observed or seeded since the
    start: observe_drill stays the truth."""
    key = (namespace, policy)
    with _drill_lock:
        if last is None or key in _drill_checks:
            return
        _drill_checks[key] = set()
        DRILL_LAST_RESULT.labels(*key).set(1 if last.result == "Passed" else 0)
        if last.result == "Passed" and last.completion_time is not None:
            DRILL_LAST_SUCCESS.labels(*key).set(last.completion_time.timestamp())
        if last.restore_seconds is not None:
            DRILL_RESTORE_SECONDS.labels(*key).set(last.restore_seconds)
