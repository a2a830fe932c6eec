"""BackupVerification: one restore drill of a backup, and the drill settings a BackupPolicy
schedules drills with. A drill restores the backup into a scratch namespace the operator owns,
runs named checks, records what it measured and removes what it created."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from safehold.api.base import ApiModel, Condition, DnsLabel, DnsSubdomain, LocalObjectReference
from safehold.api.content import DatabaseTls
from safehold.api.durations import DrillTimeout, KeepDuration, RtoTarget

VerificationPhase = Literal["New", "Running", "Succeeded", "Failed"]
CheckResult = Literal["Passed", "Failed", "Skipped"]
BackupVerificationResult = Literal["Verified", "VerificationFailed", "Corrupt"]


class ProbeJob(ApiModel):
    """A Job of the user's own image and command, run in the scratch namespace after the
    restore; the drill's check `probe:<name>` passes when it succeeds."""

    name: DnsLabel
    """Name of the probe, unique in the list; the check is reported as probe:<name>."""
    image: str = Field(min_length=1, max_length=512)
    """Container image of the probe."""
    command: list[str] = Field(min_length=1, max_length=64)
    """Command and arguments; exit code 0 passes."""
    timeout_seconds: int = Field(default=300, ge=1, le=86400)
    """How long the probe may run before it fails."""


class DatabaseProbe(ApiModel):
    """A query against a restored scratch database and what its answer must be."""

    name: DnsLabel
    """Name of the probe, unique in the target's list; failures name it."""
    database: str | None = Field(default=None, min_length=1, max_length=128)
    """The backed-up database (its original name) the query runs in; default: the first
    database of the target. Redis: the logical database number (default 0)."""
    query: str = Field(min_length=1, max_length=4096)
    """SQL (PostgreSQL, MySQL/MariaDB) whose first column of its first row is compared, run
    read-only; for Redis one read-only command such as `DBSIZE` or `GET config:version`."""
    expect: str = Field(min_length=2, max_length=1024, pattern=r"^(==|!=|>=|<=|>|<)\s*\S.*$")
    """The comparison the answer must pass: `>= 1000`, `== ready`, `!= 0`. A number compares
    as a number (the answer must then be one), anything else, or a quoted value
    (`== "42"`), as text; an SQL NULL or Redis nil answer is the text NULL."""


class DatabaseCheck(ApiModel):
    """How the drill checks one database target of the backup."""

    target: DnsLabel
    """Name of the target in the backup."""
    host: str | None = Field(default=None, max_length=253)
    """Restore into this scratch server instead of the original one (required for Redis:
    without it a Redis target is Skipped with ScratchServerRequired)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port of that server."""
    credentials_secret: DnsSubdomain | None = None
    """Secret (same namespace) with username/password for that server."""
    tls: DatabaseTls | None = None
    """TLS settings for that server; default: those of the original target."""
    compare_row_counts: bool = True
    """Compare each table's row count (Redis: each logical database's key count) with the
    counts recorded at backup time."""
    probes: list[DatabaseProbe] = Field(default_factory=list, max_length=32)
    """Queries whose answers must meet their expectation."""


class DatabaseChecks(ApiModel):
    """Database targets restored into scratch databases (renamed, dropped after the drill)."""

    enabled: bool = True
    """Restore and check every dumped target of the backup."""
    targets: list[DatabaseCheck] = Field(default_factory=list, max_length=64)
    """Per-target settings; targets not listed restore on their original server into
    scratch databases (<db>_drill_<suffix>) and compare row counts. A Redis target is checked
    only when listed here with the host of a scratch server."""


class DrillChecks(ApiModel):
    """Which checks a drill runs besides restoring (the restore itself is always a check)."""

    repository: bool = True
    """restic check of the repositories the backup's data lives in."""
    read_data_runs: int = Field(default=10, ge=1, le=1000)
    """The repository check reads 1/N of the pack files per drill (restic
    --read-data-subset=k/N, k advancing with each drill of the policy), so that N successive
    drills read all stored data; 1 reads everything every time."""
    content: bool = True
    """Every restored object against the checksum in the backup's index, and every restored
    file against its snapshot (restic restore --verify)."""
    workloads: bool = True
    """Restored Deployments and StatefulSets become Ready within workloadTimeout (needs a node
    that runs pods; without one the check fails with WorkloadsNotReady)."""
    workload_timeout: DrillTimeout = "10m"
    """How long restored workloads may take to become Ready."""
    databases: DatabaseChecks = Field(default_factory=DatabaseChecks)
    """Database targets: restored into scratch databases, row counts compared, probes run."""
    probes: list[ProbeJob] = Field(default_factory=list, max_length=16)
    """User probe Jobs run in the scratch namespace."""


class DrillSettings(ApiModel):
    """How a drill runs: its checks and what it keeps of a failed drill."""

    checks: DrillChecks = Field(default_factory=DrillChecks)
    """The checks to run."""
    keep_on_failure: KeepDuration | None = None
    """Keep a failed drill's scratch namespace this long for inspection (then it is removed);
    absent: removed at once, like a passed drill's."""
    timeout: DrillTimeout = "1h"
    """The whole drill's limit: restore and checks. Past it the drill fails with
    DrillTimedOut and its scratch objects are removed."""


class PolicyVerification(DrillSettings):
    """Scheduled restore drills of the policy's latest successful (never Corrupt) backup."""

    schedule: str = Field(min_length=1, max_length=128)
    """Cron schedule of the drills (5 fields or @daily etc.), in the policy's timeZone; missed
    drills follow the policy's startingDeadlineSeconds; a drill never starts while another
    drill of the policy runs."""
    rto_target: RtoTarget | None = None
    """Recovery time objective: Ready turns False (RtoTargetMissed) when the last drill's
    measured restore time exceeds it."""
    successful_history_limit: int = Field(default=3, ge=0, le=100)
    """Finished successful drills of the policy that are kept; older ones are deleted."""
    failed_history_limit: int = Field(default=3, ge=0, le=100)
    """Failed drills of the policy that are kept; older ones are deleted."""


class BackupVerificationSpec(DrillSettings):
    """Desired state of a BackupVerification: exactly one of backupRef or policyRef."""

    backup_ref: LocalObjectReference | None = None
    """Drill this Backup (same namespace)."""
    policy_ref: LocalObjectReference | None = None
    """Drill the newest successful, not Corrupt, Backup of this BackupPolicy."""


class CheckStatus(ApiModel):
    """One check of a drill."""

    name: str
    """restore, repository, content, workloads, database:<target> or probe:<name>."""
    result: CheckResult
    """Passed, Failed or Skipped (not applicable, or not reached)."""
    reason: str | None = None
    """Machine-readable reason when it failed or was skipped."""
    message: str = ""
    """What was checked and what was found."""
    duration_seconds: float | None = None
    """How long the check took."""


class BackupVerificationStatus(ApiModel):
    """Observed state of a BackupVerification."""

    phase: VerificationPhase | None = None
    """Derived from the conditions: New, Running, Succeeded or Failed."""
    conditions: list[Condition] = Field(default_factory=list)
    """Succeeded (Unknown while running; False naming the first failed check) and Complete."""
    observed_generation: int | None = None
    """The .metadata.generation last reconciled."""
    backup: str | None = None
    """The Backup drilled (resolved from policyRef if needed)."""
    policy: str | None = None
    """The policy the drill belongs to."""
    result: Literal["Passed", "Failed"] | None = None
    """Passed when every check passed; for kubectl's Result column."""
    scratch_namespaces: list[str] = Field(default_factory=list)
    """The namespaces the drill restored into, one per namespace of the backup (removed
    after the drill)."""
    scratch_removed: bool | None = None
    """Whether everything the drill created is gone: False when the drill finishes (its
    namespaces are being deleted), True once they are (the drill's result is out before)."""
    scratch_databases: list[str] = Field(default_factory=list)
    """Scratch databases the drill created, as target/database (dropped after the drill)."""
    keep_until: datetime | None = None
    """A failed drill's scratch namespace is kept until then (keepOnFailure)."""
    start_time: datetime | None = None
    """When the drill started."""
    completion_time: datetime | None = None
    """When the drill finished."""
    restore_seconds: float | None = None
    """Measured restore time (achieved RTO): from the start of the restore until every
    restored item is in place (workloads Ready when that check runs)."""
    rto: str | None = None
    """restoreSeconds as a duration (e.g. 1m20s), for kubectl's RTO column."""
    backup_age_seconds: float | None = None
    """Age of the backup when the drill started (achieved RPO)."""
    checks: list[CheckStatus] = Field(default_factory=list)
    """Every check, in the order it ran."""
    data_subset: str | None = None
    """The part of the stored data the repository check read, as k/N (restic
    --read-data-subset); the next drill of the policy reads part k+1."""
    errors: list[str] = Field(default_factory=list)
    """Errors, each naming the item it concerns."""
    warnings: list[str] = Field(default_factory=list)
    """Warnings, each naming the item it concerns."""


class BackupVerificationState(ApiModel):
    """The last verdict on a Backup (also in its catalog entry)."""

    result: BackupVerificationResult
    """Verified (a drill passed), VerificationFailed (a drill failed a check that does not
    prove its data damaged) or Corrupt (its repository data, index or manifest failed a
    check: no latest restore or drill picks it, retention never counts it)."""
    time: datetime
    """When the verdict was reached."""
    verification: DnsSubdomain | None = None
    """The BackupVerification behind it; absent when the location's repository check found it."""
    message: str = ""
    """What was found."""


class VerificationReference(ApiModel):
    """The last drill of a policy."""

    name: str
    """Name of the BackupVerification."""
    backup: str | None = None
    """The Backup it drilled."""
    result: Literal["Passed", "Failed"]
    """Its result."""
    completion_time: datetime | None = None
    """When it finished."""
    restore_seconds: float | None = None
    """Its measured restore time."""
