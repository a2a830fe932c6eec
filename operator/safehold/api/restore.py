"""RestoreRequest: a one-shot restore of (part of) a backup. Its spec never changes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from safehold.api.backup import DatabaseResult, VolumeResult
from safehold.api.base import (
    ApiModel,
    Condition,
    DnsLabel,
    DnsSubdomain,
    LabelSelector,
    LocalObjectReference,
)
from safehold.api.content import DatabaseTls
from safehold.api.durations import ReadyTimeout

RestorePhase = Literal["New", "Running", "Succeeded", "PartiallyFailed", "Failed"]


class VolumeRestore(ApiModel):
    """Which volume data to restore."""

    enabled: bool = True
    """Restore PVC data contained in the backup."""
    pvcs: list[str] | None = None
    """Only these PVCs (namespace/name or name); empty means all."""
    overwrite_existing: bool = False
    """Write into an existing non-empty PVC. Without it such PVCs are skipped."""


class DatabaseRestoreTarget(ApiModel):
    """Where one dumped database target is restored to."""

    target: DnsLabel
    """Name of the target in the backup."""
    host: str | None = None
    """Restore into this host instead of the original."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port of that host."""
    credentials_secret: str | None = None
    """Secret with username/password for that host."""
    tls: DatabaseTls | None = None
    """TLS settings for that host; default: those of the original target."""
    database_mapping: dict[str, str] = Field(default_factory=dict)
    """Rename databases: original name to new name."""
    clean: bool = False
    """Restore over what the target already has: PostgreSQL drops the dumped objects first
    (pg_restore --clean), MySQL/MariaDB replays the dump's DROP TABLE IF EXISTS, Redis empties
    (FLUSHDB) each logical database it writes into and replaces function libraries of the
    same name. Without it a database that exists (for Redis: a logical database holding keys,
    a library of the same name) fails the target with DatabaseExists and nothing is written."""
    restore_accounts: bool = False
    """Also replay the stored accounts before the databases: PostgreSQL roles and tablespaces
    (globals.sql), MySQL/MariaDB users and grants (users.sql, when the backup has them).
    Statements that fail, such as a role that exists, become warnings. Ignored for Redis."""


class DatabaseRestore(ApiModel):
    """Which database dumps to restore."""

    enabled: bool = True
    """Restore database dumps contained in the backup."""
    targets: list[DatabaseRestoreTarget] = Field(default_factory=list)
    """Per-target overrides; targets not listed restore to their original server. A target
    named here that the backup has no dump of (never backed up, or failed at backup time)
    fails in the result (TargetNotInBackup, TargetNotBackedUp) and the restore is not
    Succeeded; a target not named here whose dump failed is Skipped, with a warning."""
    target_ready_timeout: ReadyTimeout = "5m"
    """How long a database restore waits for its server to accept connections (refused,
    unreachable or starting up) before it fails with TargetNotReady; 0s = no waiting."""


class RestoreRequestSpec(ApiModel):
    """Desired state of a RestoreRequest: exactly one of backupRef or policyRef."""

    backup_ref: LocalObjectReference | None = None
    """Restore this Backup (same namespace)."""
    policy_ref: LocalObjectReference | None = None
    """Restore the newest successful Backup of this BackupPolicy."""
    included_namespaces: list[DnsLabel] | None = None
    """Only objects from these namespaces of the backup; empty means all."""
    included_resources: list[str] = Field(default_factory=lambda: ["*"])
    """Resource types as resource.group; * means all."""
    excluded_resources: list[str] = Field(default_factory=list)
    """Resource types never restored."""
    label_selector: LabelSelector | None = None
    """Only objects carrying these labels."""
    namespace_mapping: dict[str, str] = Field(default_factory=dict)
    """Restore objects of namespace A into namespace B: {A: B}."""
    existing_resource_policy: Literal["skip", "update"] = "skip"
    """What happens to objects that already exist: skip leaves them, update applies the
    backed-up version over them."""
    dry_run: bool = False
    """Change nothing; report per object what would be created, updated or skipped."""
    service_account_name: DnsSubdomain | None = None
    """ServiceAccount of the RestoreRequest's namespace whose rights the restore of objects
    acts with: the API server's RBAC and escalation checks decide what it may create or
    change, and a refused object fails by name. Default outside the operator's namespace:
    safehold-restore (it must exist); in the operator's namespace the operator's own rights,
    unless an account is named here."""
    volumes: VolumeRestore | None = None
    """Volume data restore options."""
    databases: DatabaseRestore | None = None
    """Database restore options."""


class RestoreCounts(ApiModel):
    """Objects by outcome."""

    created: int = 0
    """Objects created."""
    updated: int = 0
    """Objects updated."""
    skipped: int = 0
    """Objects left as they were."""
    failed: int = 0
    """Objects that could not be restored."""


class RestoreStageStatus(ApiModel):
    """One stage of the restore plan, in the order the restore runs them: cluster
    (CRDs and cluster-scoped objects), namespaces, configuration, volumes (PVCs and their
    data), workloads, resources (everything else, custom resources included), databases."""

    name: str
    """Name of the stage."""
    items: int = 0
    """Objects, namespaces, PVC data and database targets planned in the stage."""
    phase: Literal["Pending", "Running", "Completed", "Failed"] = "Pending"
    """Pending, Running, Completed (its items may still have failed one by one) or Failed
    (the stage could not go on; later stages did not run)."""
    counts: RestoreCounts | None = None
    """The stage's objects by outcome."""


class RestoreRequestStatus(ApiModel):
    """Observed state of a RestoreRequest."""

    phase: RestorePhase | None = None
    """Derived from the conditions."""
    conditions: list[Condition] = Field(default_factory=list)
    """Succeeded (Unknown while running) and Complete (True when finished either way)."""
    observed_generation: int | None = None
    """The .metadata.generation last reconciled."""
    backup: str | None = None
    """The Backup restored from (resolved from policyRef if needed)."""
    start_time: datetime | None = None
    """When the restore started."""
    completion_time: datetime | None = None
    """When the restore finished."""
    counts: RestoreCounts | None = None
    """Objects by outcome."""
    stages: list[RestoreStageStatus] = Field(default_factory=list)
    """The restore plan's stages and how far each is (also for a dry run)."""
    volumes: list[VolumeResult] = Field(default_factory=list)
    """Per-PVC results of the volume data restore."""
    databases: list[DatabaseResult] = Field(default_factory=list)
    """Per-target results of the database restore."""
    results_path: str | None = None
    """Catalog path of the full per-object result list."""
    results_config_map: str | None = None
    """The ConfigMap (in the RestoreRequest's namespace) holding the per-object results when
    the location is ReadOnly: gzip-compressed JSON under binaryData `results.json.gz`."""
    errors: list[str] = Field(default_factory=list)
    """Errors, each naming the item it concerns."""
    warnings: list[str] = Field(default_factory=list)
    """Warnings, each naming the item it concerns."""
